//! Declarative roles and databases: compare what the spec declares with what the catalog
//! holds and produce the SQL that closes the gap. Planning is pure and unit-tested; running
//! the plan needs a connection to the primary.
//!
//! Nothing is dropped unless the spec says `ensure: Absent`. Passwords never appear in SQL
//! text: roles get a SCRAM-SHA-256 verifier computed here, and statements carry a redacted
//! form for logs and spans.

use std::collections::{BTreeMap, BTreeSet};

use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use pgpilot_api::cluster::{DatabaseSpec, Ensure, RoleSpec};
use pgpilot_toolkit::Sensitive;
use tracing::Instrument;

use crate::credentials::{password_of, text_of};
use crate::names::{Names, POSTGRES_PORT, SUPERUSER};
use crate::tls::CA_CERT;

/// A role as the catalog (`pg_roles`) shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedRole {
    pub login: bool,
    pub superuser: bool,
    pub create_db: bool,
    pub create_role: bool,
    pub connection_limit: i32,
    pub member_of: BTreeSet<String>,
}

/// A database as the catalog shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedDatabase {
    pub owner: String,
    /// Extensions installed in it (filled only for databases the spec lists extensions for).
    pub extensions: BTreeSet<String>,
}

/// One statement, and what may be logged of it. `Debug` shows only the redacted form: the
/// SQL itself may carry a password verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub redacted: String,
    /// Database to run it in (`None`: the maintenance database).
    pub database: Option<String>,
}

impl fmt::Debug for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Statement")
            .field("redacted", &self.redacted)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl Statement {
    /// A statement with nothing to hide.
    pub fn plain(sql: String) -> Self {
        Self {
            redacted: sql.clone(),
            sql,
            database: None,
        }
    }

    /// `ALTER ROLE <role> [attributes] PASSWORD '<SCRAM verifier of password>'`, shown with the
    /// verifier redacted.
    pub fn password(role: &str, attributes: &str, password: &Sensitive) -> Self {
        let (name, verifier) = (quote_ident(role), scram_verifier(password));
        let attributes = if attributes.is_empty() {
            String::new()
        } else {
            format!("{attributes} ")
        };
        Self {
            sql: format!(
                "ALTER ROLE {name} {attributes}PASSWORD '{}'",
                verifier.expose()
            ),
            redacted: format!("ALTER ROLE {name} {attributes}PASSWORD '<redacted>'"),
            database: None,
        }
    }

    /// Runs the statement on `client` (its own transaction), traced by its redacted form.
    pub async fn execute(&self, client: &tokio_postgres::Client) -> Result<(), SqlError> {
        let span = tracing::info_span!("sql.exec", statement = %self.redacted);
        client
            .batch_execute(&self.sql)
            .instrument(span)
            .await
            .map_err(|source| SqlError::Statement {
                statement: self.redacted.clone(),
                source,
            })
    }
}

/// `"name"` with embedded quotes doubled: safe for any identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn attributes(r: &RoleSpec) -> String {
    let flag = |on: bool, name: &str| {
        if on {
            name.to_owned()
        } else {
            format!("NO{name}")
        }
    };
    [
        flag(r.login, "LOGIN"),
        flag(r.superuser, "SUPERUSER"),
        flag(r.create_db, "CREATEDB"),
        flag(r.create_role, "CREATEROLE"),
        format!("CONNECTION LIMIT {}", r.connection_limit),
    ]
    .join(" ")
}

fn matches(r: &RoleSpec, o: &ObservedRole) -> bool {
    r.login == o.login
        && r.superuser == o.superuser
        && r.create_db == o.create_db
        && r.create_role == o.create_role
        && r.connection_limit == o.connection_limit
}

/// A SCRAM-SHA-256 verifier for `password` (salted, so it differs on every call).
pub fn scram_verifier(password: &Sensitive) -> Sensitive {
    Sensitive::new(postgres_protocol::password::scram_sha_256(
        password.expose().as_bytes(),
    ))
}

/// Whether `stored` (a `pg_authid.rolpassword`) is a SCRAM-SHA-256 verifier of `password`:
/// recomputed with the stored salt and iteration count (RFC 5802), so a role whose password
/// already matches its Secret is left alone without the operator keeping any state.
pub fn verifier_matches(stored: &Sensitive, password: &Sensitive) -> bool {
    let (stored, password) = (stored.expose(), password.expose());
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::{Digest, Sha256};

    let parse = || {
        let rest = stored.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        Some((
            iterations.parse::<u32>().ok()?,
            STANDARD.decode(salt).ok()?,
            STANDARD.decode(stored_key).ok()?,
            STANDARD.decode(server_key).ok()?,
        ))
    };
    let Some((iterations, salt, stored_key, server_key)) = parse() else {
        return false;
    };
    // As PostgreSQL and libpq do: SASLprep when the password allows it, raw bytes otherwise.
    let prepared = stringprep::saslprep(password);
    let bytes = match &prepared {
        Ok(p) => p.as_bytes(),
        Err(_) => password.as_bytes(),
    };
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(bytes, &salt, iterations, &mut salted);
    let hmac = |key: &[u8], msg: &[u8]| {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).ok()?;
        mac.update(msg);
        Some(mac.finalize().into_bytes())
    };
    let (Some(client_key), Some(server)) =
        (hmac(&salted, b"Client Key"), hmac(&salted, b"Server Key"))
    else {
        return false;
    };
    Sha256::digest(client_key).as_slice() == stored_key.as_slice()
        && server.as_slice() == server_key.as_slice()
}

/// Statements that make the roles match the spec. `passwords` holds the passwords to set
/// now (new roles, and roles whose Secret changed), by role name.
pub fn plan_roles(
    spec: &[RoleSpec],
    observed: &BTreeMap<String, ObservedRole>,
    passwords: &BTreeMap<String, Sensitive>,
) -> Vec<Statement> {
    let mut out = Vec::new();
    for r in spec.iter().filter(|r| r.ensure == Ensure::Present) {
        let name = quote_ident(&r.name);
        match observed.get(&r.name) {
            None => out.push(Statement::plain(format!(
                "CREATE ROLE {name} {}",
                attributes(r)
            ))),
            Some(o) if !matches(r, o) => out.push(Statement::plain(format!(
                "ALTER ROLE {name} {}",
                attributes(r)
            ))),
            Some(_) => {}
        }
        if let Some(password) = passwords.get(&r.name) {
            out.push(Statement::password(&r.name, "", password));
        }
        let has = observed
            .get(&r.name)
            .map(|o| o.member_of.clone())
            .unwrap_or_default();
        for group in r.in_roles.iter().filter(|g| !has.contains(*g)) {
            out.push(Statement::plain(format!(
                "GRANT {} TO {name}",
                quote_ident(group)
            )));
        }
    }
    for r in spec.iter().filter(|r| r.ensure == Ensure::Absent) {
        if observed.contains_key(&r.name) {
            let name = quote_ident(&r.name);
            // Objects it owns go to postgres first, so the drop cannot fail half-way.
            out.push(Statement::plain(format!(
                "REASSIGN OWNED BY {name} TO postgres"
            )));
            out.push(Statement::plain(format!("DROP OWNED BY {name}")));
            out.push(Statement::plain(format!("DROP ROLE {name}")));
        }
    }
    out
}

/// Statements that make the databases match the spec.
pub fn plan_databases(
    spec: &[DatabaseSpec],
    observed: &BTreeMap<String, ObservedDatabase>,
) -> Vec<Statement> {
    let mut out = Vec::new();
    for d in spec {
        let name = quote_ident(&d.name);
        let owner = d.owner.as_deref().unwrap_or("postgres");
        match (d.ensure, observed.get(&d.name)) {
            (Ensure::Present, None) => {
                out.push(Statement::plain(format!(
                    "CREATE DATABASE {name} OWNER {}",
                    quote_ident(owner)
                )));
            }
            (Ensure::Present, Some(o)) if o.owner != owner => {
                out.push(Statement::plain(format!(
                    "ALTER DATABASE {name} OWNER TO {}",
                    quote_ident(owner)
                )));
            }
            (Ensure::Absent, Some(_)) => {
                out.push(Statement::plain(format!(
                    "DROP DATABASE {name} WITH (FORCE)"
                )));
            }
            _ => {}
        }
        if d.ensure == Ensure::Present {
            let installed = observed
                .get(&d.name)
                .map(|o| o.extensions.clone())
                .unwrap_or_default();
            for ext in d.extensions.iter().filter(|e| !installed.contains(*e)) {
                out.push(Statement {
                    sql: format!("CREATE EXTENSION IF NOT EXISTS {}", quote_ident(ext)),
                    redacted: format!(
                        "CREATE EXTENSION IF NOT EXISTS {} (in {})",
                        quote_ident(ext),
                        d.name
                    ),
                    database: Some(d.name.clone()),
                });
            }
        }
    }
    out
}

/// Reads the roles the spec mentions from `pg_roles`.
pub async fn observe_roles(
    client: &tokio_postgres::Client,
    names: &[String],
) -> Result<BTreeMap<String, ObservedRole>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT r.rolname, r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolconnlimit,
                    COALESCE(ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                                   WHERE m.member = r.oid), '{}')
             FROM pg_roles r WHERE r.rolname = ANY($1)",
            &[&names],
        )
        .instrument(tracing::debug_span!("sql.query", what = "roles"))
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let groups: Vec<String> = row.get(6);
            (
                row.get::<_, String>(0),
                ObservedRole {
                    login: row.get(1),
                    superuser: row.get(2),
                    create_db: row.get(3),
                    create_role: row.get(4),
                    connection_limit: row.get(5),
                    member_of: groups.into_iter().collect(),
                },
            )
        })
        .collect())
}

/// Reads the databases the spec mentions (owner only; extensions are read per database).
pub async fn observe_databases(
    client: &tokio_postgres::Client,
    names: &[String],
) -> Result<BTreeMap<String, ObservedDatabase>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT d.datname, pg_get_userbyid(d.datdba) FROM pg_database d WHERE d.datname = ANY($1)",
            &[&names],
        )
        .instrument(tracing::debug_span!("sql.query", what = "databases"))
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            (
                row.get::<_, String>(0),
                ObservedDatabase {
                    owner: row.get(1),
                    extensions: BTreeSet::new(),
                },
            )
        })
        .collect())
}

/// Extensions installed in the database `client` is connected to.
pub async fn observe_extensions(
    client: &tokio_postgres::Client,
) -> Result<BTreeSet<String>, tokio_postgres::Error> {
    let rows = client
        .query("SELECT extname FROM pg_extension", &[])
        .instrument(tracing::debug_span!("sql.query", what = "extensions"))
        .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// Stored password verifiers of the given roles (`pg_authid`: superuser only).
pub async fn observe_passwords(
    client: &tokio_postgres::Client,
    names: &[String],
) -> Result<BTreeMap<String, Sensitive>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY($1) AND rolpassword IS NOT NULL",
            &[&names],
        )
        .instrument(tracing::debug_span!("sql.query", what = "passwords"))
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get(0), Sensitive::new(r.get::<_, String>(1))))
        .collect())
}

/// Why roles and databases could not be brought to the spec. Messages never hold
/// passwords: statements are shown redacted.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("connecting to database {database}: {}", describe(source))]
    Connect {
        database: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("reading the catalog: {}", describe(.0))]
    Observe(#[source] tokio_postgres::Error),
    #[error(transparent)]
    Tls(crate::tls::TlsError),
    #[error("{statement}: {}", describe(source))]
    Statement {
        statement: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// The server's own words: tokio-postgres says only "db error" and keeps the message in
/// its source.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// The server to converge and the superuser to do it as.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Sensitive,
    /// TLS, verified: `host` is an IP address, the certificate is checked against the
    /// cluster's CA and the name given here.
    pub tls: Option<ServerTls>,
}

/// How pgpilot checks an instance's certificate: `verify-full` against the cluster's CA and
/// the pod's DNS name (pgpilot connects by IP, which the certificate does not name).
#[derive(Clone)]
pub struct ServerTls {
    pub ca: String,
    pub name: String,
}

impl Target {
    /// pgpilot's connection to instance pod `pod` at `ip` as the superuser, from the
    /// superuser Secret: over TLS once the Secret carries the cluster's CA (`ca.crt`).
    pub fn superuser(
        names: &Names,
        namespace: &str,
        pod: &str,
        ip: &str,
        secret: &Secret,
    ) -> Option<Target> {
        Some(Target {
            host: ip.to_owned(),
            port: POSTGRES_PORT as u16,
            user: SUPERUSER.to_owned(),
            password: password_of(secret)?,
            tls: text_of(secret, CA_CERT).map(|ca| ServerTls {
                ca,
                name: names.pod_host(pod, namespace),
            }),
        })
    }

    pub async fn connect(&self, database: &str) -> Result<tokio_postgres::Client, SqlError> {
        let mut config = tokio_postgres::Config::new();
        match (&self.tls, self.host.parse::<std::net::IpAddr>()) {
            (Some(tls), Ok(ip)) => {
                config
                    .host(&tls.name)
                    .hostaddr(ip)
                    .ssl_mode(tokio_postgres::config::SslMode::Require);
            }
            _ => {
                config.host(&self.host);
            }
        }
        config
            .port(self.port)
            .user(&self.user)
            .password(self.password.expose())
            .dbname(database)
            .application_name("pgpilot")
            .connect_timeout(std::time::Duration::from_secs(3))
            // A statement waiting on a lock, or a server gone quiet, must not hold the
            // reconcile: it fails, and the next reconcile tries again.
            .options("-c statement_timeout=30s -c lock_timeout=10s")
            .tcp_user_timeout(std::time::Duration::from_secs(10));
        let span = tracing::debug_span!(
            "sql.connect",
            host = %self.host,
            database,
            tls = self.tls.is_some()
        );
        let connect_error = |source| SqlError::Connect {
            database: database.to_owned(),
            source,
        };
        let client = match &self.tls {
            Some(tls) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
                    crate::tls::client_config(&tls.ca).map_err(SqlError::Tls)?,
                );
                let (client, connection) = config
                    .connect(tls)
                    .instrument(span)
                    .await
                    .map_err(connect_error)?;
                drive(connection);
                client
            }
            None => {
                let (client, connection) = config
                    .connect(tokio_postgres::NoTls)
                    .instrument(span)
                    .await
                    .map_err(connect_error)?;
                drive(connection);
                client
            }
        };
        Ok(client)
    }
}

/// Runs a connection on a task of its own until the client goes.
fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection closed");
        }
    });
}

/// Brings roles and databases to the spec on `target` and returns how many statements ran
/// (0 when everything already matched). `passwords` holds each login role's password from
/// its Secret; it is set only where the stored verifier does not match it already.
pub async fn converge(
    target: &Target,
    roles: &[RoleSpec],
    databases: &[DatabaseSpec],
    passwords: &BTreeMap<String, Sensitive>,
) -> Result<usize, SqlError> {
    if roles.is_empty() && databases.is_empty() {
        return Ok(0);
    }
    let admin = target.connect("postgres").await?;
    let role_names: Vec<String> = roles.iter().map(|r| r.name.clone()).collect();
    let observed = observe_roles(&admin, &role_names)
        .await
        .map_err(SqlError::Observe)?;
    let with_password: Vec<String> = passwords.keys().cloned().collect();
    let stored = observe_passwords(&admin, &with_password)
        .await
        .map_err(SqlError::Observe)?;
    let to_set: BTreeMap<String, Sensitive> = passwords
        .iter()
        .filter(|(name, pw)| !stored.get(*name).is_some_and(|v| verifier_matches(v, pw)))
        .map(|(n, p)| (n.clone(), p.clone()))
        .collect();
    let mut plan = plan_roles(roles, &observed, &to_set);

    let db_names: Vec<String> = databases.iter().map(|d| d.name.clone()).collect();
    let mut observed_dbs = observe_databases(&admin, &db_names)
        .await
        .map_err(SqlError::Observe)?;
    for d in databases.iter().filter(|d| !d.extensions.is_empty()) {
        if let Some(o) = observed_dbs.get_mut(&d.name) {
            let client = target.connect(&d.name).await?;
            o.extensions = observe_extensions(&client)
                .await
                .map_err(SqlError::Observe)?;
        }
    }
    plan.extend(plan_databases(databases, &observed_dbs));

    // Each statement is its own transaction (CREATE DATABASE cannot run inside one); the
    // first failure stops the run and names the statement, redacted.
    for s in &plan {
        let other;
        let client = match &s.database {
            Some(db) => {
                other = target.connect(db).await?;
                &other
            }
            None => &admin,
        };
        s.execute(client).await?;
    }
    Ok(plan.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Sensitive {
        Sensitive::new(s)
    }

    fn role(yaml: &str) -> RoleSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn db(yaml: &str) -> DatabaseSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn sql(stmts: &[Statement]) -> Vec<&str> {
        stmts.iter().map(|s| s.redacted.as_str()).collect()
    }

    #[test]
    fn a_verifier_matches_its_password_only() {
        let v = scram_verifier(&pw("s3cret-Passw0rd"));
        assert!(verifier_matches(&v, &pw("s3cret-Passw0rd")));
        assert!(!verifier_matches(&v, &pw("s3cret-Passw0rd ")));
        assert!(!verifier_matches(&pw("md5abcdef"), &pw("s3cret-Passw0rd")));
        assert!(!verifier_matches(&pw("SCRAM-SHA-256$garbage"), &pw("x")));
        // A verifier as PostgreSQL 15 stored it for `CREATE ROLE x PASSWORD 'pgpilot'`.
        assert!(verifier_matches(
            &pw(
                "SCRAM-SHA-256$4096:mHAvFHcCBaWDwfBkuOvy/Q==$HqN6e0qwOeHt7rCpc0SlIk11LX+MpgEzrZ8P3XBcA08=:gqdB1VxRfxK9SiIh8maZ3Wksqf4wVLa/bbIk8os9g08="
            ),
            &pw("pgpilot")
        ));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn a_new_role_is_created_with_its_attributes_password_and_groups() {
        let spec = [role("{name: app, createDb: true, inRoles: [readers]}")];
        let passwords = BTreeMap::from([("app".to_owned(), pw("s3cret-password"))]);
        let plan = plan_roles(&spec, &BTreeMap::new(), &passwords);
        assert_eq!(
            sql(&plan),
            [
                "CREATE ROLE \"app\" LOGIN NOSUPERUSER CREATEDB NOCREATEROLE CONNECTION LIMIT -1",
                "ALTER ROLE \"app\" PASSWORD '<redacted>'",
                "GRANT \"readers\" TO \"app\"",
            ]
        );
        assert!(
            plan[1].sql.contains("SCRAM-SHA-256$4096:"),
            "a verifier, not the password"
        );
        assert!(
            plan.iter().all(|s| !s.sql.contains("s3cret-password")),
            "the password never reaches SQL text"
        );
        let printed = format!("{plan:?}");
        assert!(
            !printed.contains("SCRAM-SHA-256") && printed.contains("<redacted>"),
            "Debug shows statements redacted: {printed}"
        );
    }

    #[test]
    fn a_matching_role_needs_nothing_and_a_changed_one_is_altered() {
        let spec = [role("{name: app}")];
        let same = ObservedRole {
            login: true,
            connection_limit: -1,
            ..Default::default()
        };
        assert!(
            plan_roles(
                &spec,
                &BTreeMap::from([("app".into(), same.clone())]),
                &BTreeMap::new()
            )
            .is_empty()
        );
        let differs = ObservedRole {
            create_db: true,
            ..same
        };
        assert_eq!(
            sql(&plan_roles(
                &spec,
                &BTreeMap::from([("app".into(), differs)]),
                &BTreeMap::new()
            )),
            ["ALTER ROLE \"app\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT -1"]
        );
    }

    #[test]
    fn roles_are_dropped_only_when_marked_absent() {
        let observed = BTreeMap::from([
            ("old".to_owned(), ObservedRole::default()),
            ("kept".to_owned(), ObservedRole::default()),
        ]);
        // `kept` is not in the spec at all: left alone.
        let plan = plan_roles(
            &[role("{name: old, ensure: Absent}")],
            &observed,
            &BTreeMap::new(),
        );
        assert_eq!(
            sql(&plan),
            [
                "REASSIGN OWNED BY \"old\" TO postgres",
                "DROP OWNED BY \"old\"",
                "DROP ROLE \"old\""
            ]
        );
        assert!(
            plan_roles(
                &[role("{name: gone, ensure: Absent}")],
                &observed,
                &BTreeMap::new()
            )
            .is_empty()
        );
    }

    #[test]
    fn databases_are_created_reowned_given_extensions_and_dropped_only_when_absent() {
        let spec = [
            db("{name: shop, owner: app, extensions: [pgcrypto]}"),
            db("{name: audit}"),
            db("{name: legacy, ensure: Absent}"),
        ];
        let observed = BTreeMap::from([
            (
                "audit".to_owned(),
                ObservedDatabase {
                    owner: "app".into(),
                    extensions: BTreeSet::new(),
                },
            ),
            (
                "legacy".to_owned(),
                ObservedDatabase {
                    owner: "postgres".into(),
                    extensions: BTreeSet::new(),
                },
            ),
            (
                "other".to_owned(),
                ObservedDatabase {
                    owner: "postgres".into(),
                    extensions: BTreeSet::new(),
                },
            ),
        ]);
        let plan = plan_databases(&spec, &observed);
        assert_eq!(
            sql(&plan),
            [
                "CREATE DATABASE \"shop\" OWNER \"app\"",
                "CREATE EXTENSION IF NOT EXISTS \"pgcrypto\" (in shop)",
                "ALTER DATABASE \"audit\" OWNER TO \"postgres\"",
                "DROP DATABASE \"legacy\" WITH (FORCE)",
            ]
        );
        assert_eq!(plan[1].database.as_deref(), Some("shop"));
    }
}
