//! The secret-rotation controller (`--controllers=secret-rotation`), being built: so far the
//! generators of new Secret values ([`generate`]).

pub mod generate;
