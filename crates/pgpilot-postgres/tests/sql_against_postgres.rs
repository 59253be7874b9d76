//! Declarative roles and databases against a real PostgreSQL server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeMap;

use pgpilot_api::cluster::{DatabaseSpec, RoleSpec};
use pgpilot_postgres::sql;
use pgpilot_testkit::LocalPostgres;
use pgpilot_toolkit::Sensitive;

async fn connect(conninfo: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn converge(
    pg: &LocalPostgres,
    roles: &[RoleSpec],
    dbs: &[DatabaseSpec],
    passwords: &BTreeMap<String, Sensitive>,
) -> usize {
    let target = sql::Target {
        host: "127.0.0.1".into(),
        port: pg.port,
        user: "postgres".into(),
        password: Sensitive::new(pg.password.clone()),
        tls: None,
    };
    sql::converge(&target, roles, dbs, passwords).await.unwrap()
}

#[tokio::test]
async fn roles_and_databases_converge_and_stay_converged() {
    let pg = LocalPostgres::start().unwrap();
    let roles: Vec<RoleSpec> = serde_yaml::from_str(
        "[{name: readers, login: false}, {name: app, createDb: true, inRoles: [readers]}]",
    )
    .unwrap();
    let dbs: Vec<DatabaseSpec> =
        serde_yaml::from_str("[{name: shop, owner: app, extensions: [pgcrypto]}]").unwrap();
    let passwords = BTreeMap::from([(
        "app".to_owned(),
        Sensitive::new("Zx81TimexSinclairZx81TimexSincl"),
    )]);

    let first = converge(&pg, &roles, &dbs, &passwords).await;
    assert_eq!(
        first, 6,
        "create readers, create app, set password, grant, create db, extension"
    );

    // The role logs in with its password, owns its database, and the extension exists.
    let app = connect(&pg.conninfo("app", passwords["app"].expose(), "shop"))
        .await
        .unwrap();
    let row = app
        .query_one(
            "SELECT pg_get_userbyid(datdba), current_user FROM pg_database WHERE datname = 'shop'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("app".into(), "app".into())
    );
    let ext = app
        .query_one(
            "SELECT count(*) FROM pg_extension WHERE extname = 'pgcrypto'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ext.get::<_, i64>(0), 1);

    // Converged: nothing to do; the stored verifier already matches the password.
    assert_eq!(converge(&pg, &roles, &dbs, &passwords).await, 0);
    // A new password in the Secret (a rotation) is set, once.
    let rotated = BTreeMap::from([(
        "app".to_owned(),
        Sensitive::new("Another-Password-0f-32-characters"),
    )]);
    assert_eq!(converge(&pg, &roles, &dbs, &rotated).await, 1);
    assert_eq!(converge(&pg, &roles, &dbs, &rotated).await, 0);
    assert!(
        connect(&pg.conninfo("app", rotated["app"].expose(), "shop"))
            .await
            .is_ok(),
        "app logs in with the new password"
    );

    // Removed from the spec: left alone. Marked Absent: dropped.
    assert_eq!(converge(&pg, &roles[..1], &[], &BTreeMap::new()).await, 0);
    let absent: Vec<RoleSpec> = serde_yaml::from_str("[{name: app, ensure: Absent}]").unwrap();
    let drop_db: Vec<DatabaseSpec> =
        serde_yaml::from_str("[{name: shop, ensure: Absent}]").unwrap();
    assert_eq!(converge(&pg, &[], &drop_db, &BTreeMap::new()).await, 1);
    assert_eq!(converge(&pg, &absent, &[], &BTreeMap::new()).await, 3);
    assert!(
        connect(&pg.conninfo("app", passwords["app"].expose(), "postgres"))
            .await
            .is_err(),
        "app still logs in"
    );
}
