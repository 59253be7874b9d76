//! PostgreSQL as every pgpilot controller sees it: the names and labels of a cluster's
//! objects, Patroni's REST API (observation, switchover, restart, re-initialize), the
//! instances and the choice of a successor for the primary, SQL (connections, quoting, SCRAM
//! verifiers, declared roles and databases), credential Secrets, the version pin, pgBackRest
//! (configuration, commands, TLS material, its reports and what its errors mean), the WAL
//! archiver as the primary reports it, the cluster's CA and server certificate (and TLS clients
//! that trust only it), and which changes of instance pods matter (triggers).

pub mod archiver;
pub mod credentials;
pub mod members;
pub mod names;
pub mod patroni;
pub mod pgbackrest;
pub mod roll;
pub mod sql;
pub mod tls;
pub mod triggers;
pub mod version;
