//! The secret-rotation controller (`--controllers=secret-rotation`), being built: so far the
//! generators of new Secret values ([`generate`]) and when a rotation is due ([`schedule`]).

pub mod generate;
pub mod schedule;
