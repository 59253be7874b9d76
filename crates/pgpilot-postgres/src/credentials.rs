//! Credential Secrets, rendered in one place: the cluster controller creates them and the
//! rotation controller changes them, and clients must find the same keys in the same form
//! either way (username, password, host, port, dbname, uri, jdbc-uri, pgpass, and with TLS
//! sslmode and ca.crt).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use pgpilot_toolkit::Sensitive;
use rand::RngExt;

/// Makes new passwords.
pub trait PasswordSource {
    fn new_password(&mut self) -> Sensitive;
}

/// 32 letters and digits from the thread's CSPRNG (ChaCha, seeded by the OS): ~190 bits,
/// and safe in URIs, JDBC URLs and pgpass files without escaping.
pub struct Csprng;

impl PasswordSource for Csprng {
    fn new_password(&mut self) -> Sensitive {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        Sensitive::new(
            (0..32)
                .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
                .collect::<String>(),
        )
    }
}

/// The password a credential Secret holds: the source of truth once the Secret exists.
pub fn password_of(secret: &Secret) -> Option<Sensitive> {
    let bytes = secret.data.as_ref()?.get("password")?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|p| !p.is_empty())
        .map(Sensitive::new)
}

/// A Secret value as text, if present and UTF-8.
pub fn text_of(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|v| !v.is_empty())
}

/// The two login roles that take turns for `role` under the AlternatingUsers rotation: members
/// of `role` that act as it.
pub fn alternates(role: &str) -> [String; 2] {
    [format!("{role}_a"), format!("{role}_b")]
}

/// The user a credential Secret of `role` logs in as: the role itself, or one of its
/// [`alternates`] once a rotation switched the Secret to them. Anything else (a hand-edited
/// Secret) counts as the role.
pub fn user_of(secret: &Secret, role: &str) -> String {
    text_of(secret, "username")
        .filter(|u| alternates(role).contains(u))
        .unwrap_or_else(|| role.to_owned())
}

/// Where clients connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: i32,
    /// The cluster's CA certificate (PEM), when its servers speak TLS: clients get it as
    /// `ca.crt`, and the URIs ask for TLS ([`SSL_MODE`]).
    pub ca: Option<String>,
}

/// The `sslmode` the URIs carry: TLS always, and with the CA at hand (`sslrootcert`, or
/// libpq's `~/.postgresql/root.crt`) the server is verified too; `verify-full` checks its name
/// as well (the certificate names the Services).
pub const SSL_MODE: &str = "require";

/// One login: who, with what, to which database.
#[derive(Clone, Debug)]
pub struct Login<'a> {
    pub user: &'a str,
    pub password: &'a Sensitive,
    pub dbname: &'a str,
}

/// Everything but RFC 3986's unreserved characters is escaped in URIs and JDBC parameters.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn escaped(s: &str) -> String {
    utf8_percent_encode(s, ESCAPED).to_string()
}

/// pgpass fields escape `\` and `:` with a backslash.
fn pgpass_field(s: &str) -> String {
    s.replace('\\', "\\\\").replace(':', "\\:")
}

/// The data of a credential Secret for `login` at `endpoint`.
pub fn render(login: &Login<'_>, endpoint: &Endpoint) -> BTreeMap<String, ByteString> {
    let Login {
        user,
        password,
        dbname,
    } = login;
    let password = password.expose();
    let Endpoint { host, port, ca } = endpoint;
    let (u, p, d) = (escaped(user), escaped(password), escaped(dbname));
    let (query, jdbc) = match ca {
        Some(_) => (
            format!("?sslmode={SSL_MODE}"),
            format!("&sslmode={SSL_MODE}"),
        ),
        None => (String::new(), String::new()),
    };
    let tls = ca
        .iter()
        .flat_map(|ca| [("sslmode", SSL_MODE.to_owned()), ("ca.crt", ca.clone())]);
    [
        ("username", user.to_string()),
        ("password", password.to_owned()),
        ("host", host.clone()),
        ("port", port.to_string()),
        ("dbname", dbname.to_string()),
        (
            "uri",
            format!("postgresql://{u}:{p}@{host}:{port}/{d}{query}"),
        ),
        (
            "jdbc-uri",
            format!("jdbc:postgresql://{host}:{port}/{d}?user={u}&password={p}{jdbc}"),
        ),
        (
            "pgpass",
            format!(
                "{host}:{port}:*:{}:{}\n",
                pgpass_field(user),
                pgpass_field(password)
            ),
        ),
    ]
    .into_iter()
    .chain(tls)
    .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(data: &BTreeMap<String, ByteString>, key: &str) -> String {
        String::from_utf8(data[key].0.clone()).unwrap()
    }

    fn endpoint() -> Endpoint {
        Endpoint {
            host: "db-rw.prod.svc".into(),
            port: 5432,
            ca: None,
        }
    }

    #[test]
    fn with_tls_the_uris_ask_for_it_and_the_ca_comes_along() {
        let password = Sensitive::new("s3cret");
        let login = Login {
            user: "app_user",
            password: &password,
            dbname: "shop",
        };
        let data = render(
            &login,
            &Endpoint {
                ca: Some("-----BEGIN CERTIFICATE-----\n".into()),
                ..endpoint()
            },
        );
        assert_eq!(
            text(&data, "uri"),
            "postgresql://app_user:s3cret@db-rw.prod.svc:5432/shop?sslmode=require"
        );
        assert_eq!(
            text(&data, "jdbc-uri"),
            "jdbc:postgresql://db-rw.prod.svc:5432/shop?user=app_user&password=s3cret&sslmode=require"
        );
        assert_eq!(text(&data, "sslmode"), "require");
        assert_eq!(text(&data, "ca.crt"), "-----BEGIN CERTIFICATE-----\n");
    }

    #[test]
    fn every_key_clients_read_is_rendered() {
        let password = Sensitive::new("s3cret");
        let data = render(
            &Login {
                user: "app_user",
                password: &password,
                dbname: "shop",
            },
            &endpoint(),
        );
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            [
                "dbname", "host", "jdbc-uri", "password", "pgpass", "port", "uri", "username"
            ]
        );
        assert_eq!(
            text(&data, "uri"),
            "postgresql://app_user:s3cret@db-rw.prod.svc:5432/shop"
        );
        assert_eq!(
            text(&data, "jdbc-uri"),
            "jdbc:postgresql://db-rw.prod.svc:5432/shop?user=app_user&password=s3cret"
        );
        assert_eq!(
            text(&data, "pgpass"),
            "db-rw.prod.svc:5432:*:app_user:s3cret\n"
        );
    }

    #[test]
    fn a_password_a_user_chose_survives_every_format() {
        let password = Sensitive::new("p@ss:w/rd?&\\");
        let data = render(
            &Login {
                user: "app",
                password: &password,
                dbname: "postgres",
            },
            &endpoint(),
        );
        assert_eq!(text(&data, "password"), "p@ss:w/rd?&\\");
        assert_eq!(
            text(&data, "uri"),
            "postgresql://app:p%40ss%3Aw%2Frd%3F%26%5C@db-rw.prod.svc:5432/postgres"
        );
        assert!(text(&data, "jdbc-uri").ends_with("&password=p%40ss%3Aw%2Frd%3F%26%5C"));
        assert_eq!(
            text(&data, "pgpass"),
            "db-rw.prod.svc:5432:*:app:p@ss\\:w/rd?&\\\\\n"
        );
    }

    #[test]
    fn a_secret_logs_in_as_the_role_or_one_of_its_alternates_only() {
        let with_user = |user: &str| Secret {
            data: Some(BTreeMap::from([(
                "username".to_owned(),
                ByteString(user.as_bytes().to_vec()),
            )])),
            ..Default::default()
        };
        assert_eq!(user_of(&with_user("app_b"), "app"), "app_b");
        assert_eq!(user_of(&with_user("app"), "app"), "app");
        assert_eq!(user_of(&with_user("postgres"), "app"), "app");
        assert_eq!(user_of(&Secret::default(), "app"), "app");
    }

    #[test]
    fn generated_passwords_are_long_and_differ() {
        let a = Csprng.new_password();
        let b = Csprng.new_password();
        assert_eq!(a.expose().len(), 32);
        assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
