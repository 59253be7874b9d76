//! The database's side of a role rotation: how a login looks (may it log in, is its verifier
//! the Secret's password, does an alternate act as the role) and the statements that prepare
//! an alternate, set a role's password and invalidate a login. Statements are traced by their
//! redacted form; passwords reach the server only as SCRAM verifiers.

use pgpilot_postgres::sql::{SqlError, Statement, quote_ident, verifier_matches};
use pgpilot_toolkit::Sensitive;
use tracing::Instrument;

use crate::plan::LoginSeen;

/// A login as read from the catalog.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub exists: bool,
    pub can_login: bool,
    pub verifier: Option<Sensitive>,
    /// Member of the stable role, with `role` set to it at login.
    pub acts_as_stable: bool,
}

impl Observed {
    /// Against the Secret's `password` (`None`: only whether it may log in).
    pub fn seen(&self, password: Option<&Sensitive>, alternate: bool) -> LoginSeen {
        LoginSeen {
            can_login: self.can_login && self.verifier.is_some(),
            matches_secret: match (password, &self.verifier) {
                (Some(p), Some(v)) => verifier_matches(v, p) && (!alternate || self.acts_as_stable),
                _ => false,
            },
        }
    }
}

/// Reads `user` (and whether it acts as `stable`).
pub async fn observe(
    client: &tokio_postgres::Client,
    user: &str,
    stable: &str,
) -> Result<Observed, SqlError> {
    let rows = client
        .query(
            "SELECT a.rolcanlogin, a.rolpassword, \
               EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
                       WHERE m.member = a.oid AND g.rolname = $2), \
               EXISTS (SELECT 1 FROM pg_db_role_setting s \
                       WHERE s.setrole = a.oid AND s.setdatabase = 0 \
                         AND ('role=' || $2) = ANY (s.setconfig)) \
             FROM pg_authid a WHERE a.rolname = $1",
            &[&user, &stable],
        )
        .instrument(tracing::debug_span!("sql.query", what = "login", user))
        .await
        .map_err(SqlError::Observe)?;
    Ok(match rows.first() {
        None => Observed::default(),
        Some(r) => Observed {
            exists: true,
            can_login: r.get(0),
            verifier: r.get::<_, Option<String>>(1).map(Sensitive::new),
            acts_as_stable: r.get::<_, bool>(2) && r.get::<_, bool>(3),
        },
    })
}

/// A string literal: quotes doubled.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Statements that make `user` log in with `password`: the role itself (InPlace), or an
/// alternate, created if missing, that is a member of `stable` and acts as it, so whatever it
/// creates belongs to `stable`.
pub fn sync_login(
    user: &str,
    stable: &str,
    password: &Sensitive,
    observed: &Observed,
) -> Vec<Statement> {
    if user == stable {
        return vec![Statement::password(user, "", password)];
    }
    let (u, s) = (quote_ident(user), quote_ident(stable));
    let mut out = Vec::new();
    if !observed.exists {
        out.push(Statement::plain(format!("CREATE ROLE {u} NOLOGIN")));
    }
    if !observed.acts_as_stable {
        out.push(Statement::plain(format!("GRANT {s} TO {u}")));
        out.push(Statement::plain(format!(
            "ALTER ROLE {u} SET role = {}",
            literal(stable)
        )));
    }
    out.push(Statement::password(user, "LOGIN", password));
    out
}

/// Statements that invalidate `user`: an alternate may no longer log in; the role itself
/// (the first rotation away from it) keeps what its spec says but loses its password. Its
/// sessions end.
pub fn revoke(user: &str, stable: &str) -> Vec<Statement> {
    let u = quote_ident(user);
    let alter = if user == stable {
        format!("ALTER ROLE {u} PASSWORD NULL")
    } else {
        format!("ALTER ROLE {u} NOLOGIN PASSWORD NULL")
    };
    vec![
        Statement::plain(alter),
        Statement::plain(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {}",
            literal(user)
        )),
    ]
}

/// Runs `statements` in order; the first failure stops them.
pub async fn execute(
    client: &tokio_postgres::Client,
    statements: &[Statement],
) -> Result<(), SqlError> {
    for s in statements {
        s.execute(client).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use pgpilot_postgres::sql::scram_verifier;

    use super::*;

    fn redacted(statements: &[Statement]) -> Vec<String> {
        statements.iter().map(|s| s.redacted.clone()).collect()
    }

    #[test]
    fn a_new_alternate_is_made_a_member_that_acts_as_the_role() {
        let pw = Sensitive::new("n3w-password");
        let plan = sync_login("app_a", "app", &pw, &Observed::default());
        assert_eq!(
            redacted(&plan),
            [
                "CREATE ROLE \"app_a\" NOLOGIN",
                "GRANT \"app\" TO \"app_a\"",
                "ALTER ROLE \"app_a\" SET role = 'app'",
                "ALTER ROLE \"app_a\" LOGIN PASSWORD '<redacted>'",
            ]
        );
        assert!(plan.iter().all(|s| !s.sql.contains("n3w-password")));
        // Already set up: only the password.
        let ready = Observed {
            exists: true,
            acts_as_stable: true,
            ..Default::default()
        };
        assert_eq!(
            redacted(&sync_login("app_a", "app", &pw, &ready)),
            ["ALTER ROLE \"app_a\" LOGIN PASSWORD '<redacted>'"]
        );
        // In place: the role's own password, its attributes untouched.
        assert_eq!(
            redacted(&sync_login("app", "app", &pw, &ready)),
            ["ALTER ROLE \"app\" PASSWORD '<redacted>'"]
        );
    }

    #[test]
    fn a_revoked_alternate_cannot_log_in_and_the_role_itself_keeps_its_attributes() {
        assert_eq!(
            redacted(&revoke("app_b", "app"))[0],
            "ALTER ROLE \"app_b\" NOLOGIN PASSWORD NULL"
        );
        assert_eq!(
            redacted(&revoke("app", "app"))[0],
            "ALTER ROLE \"app\" PASSWORD NULL"
        );
        assert!(redacted(&revoke("o'neil", "x"))[1].ends_with("usename = 'o''neil'"));
    }

    #[test]
    fn a_login_matches_the_secret_only_with_its_verifier_and_for_an_alternate_its_role() {
        let pw = Sensitive::new("pw-1234567890");
        let mut o = Observed {
            exists: true,
            can_login: true,
            verifier: Some(scram_verifier(&pw)),
            acts_as_stable: false,
        };
        assert!(o.seen(Some(&pw), false).matches_secret);
        assert!(
            !o.seen(Some(&pw), true).matches_secret,
            "not acting as the role"
        );
        o.acts_as_stable = true;
        assert!(o.seen(Some(&pw), true).matches_secret);
        assert!(!o.seen(Some(&Sensitive::new("other")), true).matches_secret);
        o.verifier = None;
        assert!(!o.seen(None, true).can_login, "no password, no login");
    }
}
