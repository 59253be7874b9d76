//! Checks the CRD schema and CEL rules cannot express, and the choice of image.

use kube::ResourceExt;
use pgpilot_api::PostgresCluster;
use pgpilot_api::cluster::{Ensure, OPERATOR_OWNED_PARAMETERS};
use pgpilot_api::parameters::Applies;
use pgpilot_postgres::version;
use pgpilot_toolkit::conditions::Status;
use std::collections::BTreeMap;

use crate::error::Error;

pub use pgpilot_postgres::version::DefaultImages;

/// The image the instances run: the spec's, else the default for the version.
pub fn image(cluster: &PostgresCluster, defaults: &DefaultImages) -> Result<String, Error> {
    version::image_of(cluster, defaults).ok_or_else(|| Error::Invalid {
        field: "spec.postgresql.image",
        message: format!(
            "no image given and this pgpilot has no default image for PostgreSQL {}; set spec.postgresql.image",
            cluster.spec.postgresql.version
        ),
    })
}

/// Cross-object rules: every membership names a role the cluster declares or PostgreSQL has;
/// no database is owned by a role being dropped.
pub fn validate(cluster: &PostgresCluster) -> Result<(), Error> {
    let spec = &cluster.spec;
    let present = |name: &str| {
        name == "postgres"
            || name.starts_with("pg_")
            || spec
                .roles
                .iter()
                .any(|r| r.name == name && r.ensure == Ensure::Present)
    };
    for role in &spec.roles {
        if let Some(missing) = role.in_roles.iter().find(|m| !present(m)) {
            return Err(Error::Invalid {
                field: "spec.roles",
                message: format!(
                    "role {} is a member of {missing}, which is not declared in spec.roles (or is Absent)",
                    role.name
                ),
            });
        }
    }
    for db in spec
        .databases
        .iter()
        .filter(|d| d.ensure == Ensure::Present)
    {
        if let Some(owner) = db.owner.as_deref().filter(|o| !present(o)) {
            return Err(Error::Invalid {
                field: "spec.databases",
                message: format!(
                    "database {} is owned by {owner}, which is marked Absent in spec.roles",
                    db.name
                ),
            });
        }
    }
    // What admission cannot see: CEL compares parameter names as given (a padded " port"
    // slips by), and a cluster admitted before a name joined the operator-owned list still
    // has it; the message names the key, which the CEL rule cannot within its cost budget.
    for name in spec.postgresql.parameters.keys() {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !valid {
            return Err(Error::Invalid {
                field: "spec.postgresql.parameters",
                message: format!(
                    "{name:?} is not a parameter name: letters, digits, '_' and '.', starting with a letter or '_' (no spaces)"
                ),
            });
        }
        let lower = name.to_ascii_lowercase();
        if OPERATOR_OWNED_PARAMETERS.contains(&lower.as_str())
            || lower.starts_with("recovery_target")
        {
            return Err(Error::Invalid {
                field: "spec.postgresql.parameters",
                message: format!(
                    "{name} is set by pgpilot; remove it (see docs/cluster.md, operator-owned parameters)"
                ),
            });
        }
    }
    // The provided certificate is copied into Secrets pgpilot writes: never one of those.
    if let Some(cert) = spec.tls.as_ref().and_then(|t| t.certificate.as_ref()) {
        let names = pgpilot_postgres::names::Names::new(&cluster.name_any());
        if cert.secret_name == names.patroni_auth()
            || crate::desired::kept_secrets(cluster).contains(&cert.secret_name)
        {
            return Err(Error::Invalid {
                field: "spec.tls.certificate.secretName",
                message: format!(
                    "{} is a Secret pgpilot writes for this cluster; name your own Secret (e.g. {}-server-cert)",
                    cert.secret_name, names.cluster
                ),
            });
        }
    }
    Ok(())
}

/// What the parameter tables say of the spec's parameters (see [`parameters`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ParameterCheck {
    /// The parameters not passed to Patroni, with why: the instances keep the value they run.
    pub refused: BTreeMap<String, String>,
    /// The valid ones that take effect only on a restart.
    pub on_restart: Vec<String>,
    /// Whether pgpilot has a table for the major version (else nothing is checked).
    pub checked: bool,
}

impl ParameterCheck {
    /// The `ParametersAccepted` condition.
    pub fn condition(&self, major: i32) -> (&'static str, Status, &'static str, String) {
        if !self.checked {
            return (
                PARAMETERS_ACCEPTED,
                Status::Unknown,
                "NoParameterTable",
                format!(
                    "pgpilot has no parameter table for PostgreSQL {major}: Patroni drops what PostgreSQL does not know, with a line in the pod log"
                ),
            );
        }
        if self.refused.is_empty() {
            let restart = match self.on_restart.as_slice() {
                [] => String::new(),
                names => format!(
                    "; {} take effect on a restart, which pgpilot makes one instance at a time",
                    names.join(", ")
                ),
            };
            return (
                PARAMETERS_ACCEPTED,
                Status::True,
                "Valid",
                format!("checked against PostgreSQL {major}{restart}"),
            );
        }
        let problems: Vec<&str> = self.refused.values().map(String::as_str).collect();
        (
            PARAMETERS_ACCEPTED,
            Status::False,
            "InvalidParameters",
            format!(
                "{}; not passed to Patroni: the instances keep their current value",
                problems.join("; ")
            ),
        )
    }
}

/// The condition saying whether every spec parameter reaches PostgreSQL as given.
pub const PARAMETERS_ACCEPTED: &str = "ParametersAccepted";

/// Every spec parameter against the table of the major the instances run: admission's CEL
/// catches names, booleans and enums; numbers (units, ranges), values spanning lines and
/// clusters admitted before a rule existed are caught here, before Patroni would drop or
/// clamp them.
pub fn parameters(cluster: &PostgresCluster) -> ParameterCheck {
    let spec = &cluster.spec.postgresql;
    let Some(table) = pgpilot_api::parameters::table(spec.version) else {
        return ParameterCheck::default();
    };
    let mut check = ParameterCheck {
        checked: true,
        ..ParameterCheck::default()
    };
    for (name, value) in &spec.parameters {
        match table.check(name, value) {
            Ok(Applies::OnRestart) => check.on_restart.push(name.clone()),
            Ok(Applies::OnReload) => {}
            Err(problem) => {
                check.refused.insert(name.clone(), problem.to_string());
            }
        }
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::fixtures::cluster;

    #[test]
    fn the_spec_image_wins_then_the_default_then_a_clear_error() {
        let defaults = DefaultImages::from([(17, "localhost/pgpilot/postgres:17".to_owned())]);
        let c = cluster("instances: 1\npostgresql: {version: 17}\nstorage: {size: 1Gi}");
        assert_eq!(
            image(&c, &defaults).unwrap(),
            "localhost/pgpilot/postgres:17"
        );
        let c = cluster(
            "instances: 1\npostgresql: {version: 17, image: my/pg:17.6}\nstorage: {size: 1Gi}",
        );
        assert_eq!(image(&c, &defaults).unwrap(), "my/pg:17.6");
        let c = cluster("instances: 1\npostgresql: {version: 16}\nstorage: {size: 1Gi}");
        let err = image(&c, &defaults).unwrap_err().to_string();
        assert!(
            err.starts_with("spec.postgresql.image: no image given"),
            "{err}"
        );
    }

    #[test]
    fn the_provided_certificate_cannot_be_a_secret_pgpilot_writes() {
        let with = |name: &str| {
            cluster(&format!(
                "instances: 1\npostgresql: {{version: 17}}\nstorage: {{size: 1Gi}}\ntls: {{certificate: {{secretName: {name}}}}}"
            ))
        };
        assert!(validate(&with("db-server-cert")).is_ok());
        for ours in ["db-tls", "db-ca", "db-superuser", "db-patroni-auth"] {
            let err = validate(&with(ours)).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "spec.tls.certificate.secretName: {ours} is a Secret pgpilot writes"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn parameter_names_are_checked_as_postgresql_reads_them_and_the_offender_named() {
        let with = |name: &str| {
            cluster(&format!(
                "instances: 1\npostgresql: {{version: 17, parameters: {{'{name}': '1'}}}}\nstorage: {{size: 1Gi}}"
            ))
        };
        assert!(validate(&with("work_mem")).is_ok());
        assert!(validate(&with("pg_stat_statements.max")).is_ok());
        for padded in ["port ", " wal_level", "work mem", "1x", ""] {
            let err = validate(&with(padded)).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "spec.postgresql.parameters: {padded:?} is not a parameter name"
                )),
                "{err}"
            );
        }
        for owned in ["archive_library", "Wal_Level", "recovery_target_time"] {
            let err = validate(&with(owned)).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "spec.postgresql.parameters: {owned} is set by pgpilot; remove it (see docs/cluster.md, operator-owned parameters)"
                )
            );
        }
    }

    #[test]
    fn memberships_must_name_declared_roles() {
        let ok = cluster(
            "instances: 1\npostgresql: {version: 17}\nstorage: {size: 1Gi}\nroles: [{name: readers, login: false}, {name: app, inRoles: [readers, pg_read_all_data]}]",
        );
        assert!(validate(&ok).is_ok());
        let bad = cluster(
            "instances: 1\npostgresql: {version: 17}\nstorage: {size: 1Gi}\nroles: [{name: app, inRoles: [ghosts]}]",
        );
        let err = validate(&bad).unwrap_err().to_string();
        assert_eq!(
            err,
            "spec.roles: role app is a member of ghosts, which is not declared in spec.roles (or is Absent)"
        );
    }

    #[test]
    fn a_database_cannot_be_owned_by_a_role_being_dropped() {
        let bad = cluster(
            "instances: 1\npostgresql: {version: 17}\nstorage: {size: 1Gi}\nroles: [{name: app, ensure: Absent}]\ndatabases: [{name: shop, owner: app}]",
        );
        let err = validate(&bad).unwrap_err().to_string();
        assert!(
            err.contains("database shop is owned by app, which is marked Absent"),
            "{err}"
        );
    }

    #[test]
    fn parameters_are_checked_against_the_major_that_runs() {
        let c = cluster(
            "instances: 1\npostgresql: {version: 17, parameters: {shared_buffers: 1GB, work_mem: 64MB, max_connections: '0', shared_buffer: 1GB}}\nstorage: {size: 1Gi}",
        );
        let check = parameters(&c);
        assert_eq!(check.on_restart, ["shared_buffers"]);
        assert_eq!(
            check.refused.keys().collect::<Vec<_>>(),
            ["max_connections", "shared_buffer"]
        );
        let (_, status, reason, message) = check.condition(17);
        assert_eq!((status, reason), (Status::False, "InvalidParameters"));
        assert_eq!(
            message,
            "max_connections: \"0\" is not valid: at least 1; shared_buffer is not a PostgreSQL 17 parameter (did you mean shared_buffers?); not passed to Patroni: the instances keep their current value"
        );

        let c = cluster(
            "instances: 1\npostgresql: {version: 17, parameters: {shared_buffers: 1GB, max_connections: '200', work_mem: 64MB}}\nstorage: {size: 1Gi}",
        );
        let (_, status, reason, message) = parameters(&c).condition(17);
        assert_eq!((status, reason), (Status::True, "Valid"));
        assert_eq!(
            message,
            "checked against PostgreSQL 17; max_connections, shared_buffers take effect on a restart, which pgpilot makes one instance at a time"
        );

        let c = cluster(
            "instances: 1\npostgresql: {version: 16, parameters: {shared_buffer: 1GB}}\nstorage: {size: 1Gi}",
        );
        let check = parameters(&c);
        assert!(check.refused.is_empty());
        assert_eq!(check.condition(16).1, Status::Unknown);
    }
}
