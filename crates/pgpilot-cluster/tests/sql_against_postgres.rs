//! Declarative roles and databases against a real PostgreSQL server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeMap;

use pgpilot_api::cluster::{DatabaseSpec, RoleSpec};
use pgpilot_cluster::sql;
use pgpilot_testkit::LocalPostgres;

async fn connect(conninfo: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn converge(
    pg: &LocalPostgres,
    roles: &[RoleSpec],
    dbs: &[DatabaseSpec],
    passwords: &BTreeMap<String, String>,
) -> usize {
    let admin = connect(&pg.conninfo("postgres", &pg.password, "postgres"))
        .await
        .unwrap();
    let role_names: Vec<String> = roles.iter().map(|r| r.name.clone()).collect();
    let db_names: Vec<String> = dbs.iter().map(|d| d.name.clone()).collect();
    let observed = sql::observe_roles(&admin, &role_names).await.unwrap();
    let mut plan = sql::plan_roles(roles, &observed, passwords);
    let mut observed_dbs = sql::observe_databases(&admin, &db_names).await.unwrap();
    for (name, db) in observed_dbs.iter_mut() {
        let c = connect(&pg.conninfo("postgres", &pg.password, name))
            .await
            .unwrap();
        db.extensions = sql::observe_extensions(&c).await.unwrap();
    }
    plan.extend(sql::plan_databases(dbs, &observed_dbs));
    let mut done = 0;
    for stmt in &plan {
        let client = match &stmt.database {
            Some(db) => connect(&pg.conninfo("postgres", &pg.password, db))
                .await
                .unwrap(),
            None => connect(&pg.conninfo("postgres", &pg.password, "postgres"))
                .await
                .unwrap(),
        };
        done += sql::run(&client, std::slice::from_ref(stmt))
            .await
            .map_err(|(s, e)| format!("{s}: {e}"))
            .unwrap();
    }
    done
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
        "Zx81TimexSinclairZx81TimexSincl".to_owned(),
    )]);

    let first = converge(&pg, &roles, &dbs, &passwords).await;
    assert_eq!(
        first, 6,
        "create readers, create app, set password, grant, create db, extension"
    );

    // The role logs in with its password, owns its database, and the extension exists.
    let app = connect(&pg.conninfo("app", &passwords["app"], "shop"))
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

    // Converged: nothing to do (no password change requested).
    assert_eq!(converge(&pg, &roles, &dbs, &BTreeMap::new()).await, 0);

    // Removed from the spec: left alone. Marked Absent: dropped.
    assert_eq!(converge(&pg, &roles[..1], &[], &BTreeMap::new()).await, 0);
    let absent: Vec<RoleSpec> = serde_yaml::from_str("[{name: app, ensure: Absent}]").unwrap();
    let drop_db: Vec<DatabaseSpec> =
        serde_yaml::from_str("[{name: shop, ensure: Absent}]").unwrap();
    assert_eq!(converge(&pg, &[], &drop_db, &BTreeMap::new()).await, 1);
    assert_eq!(converge(&pg, &absent, &[], &BTreeMap::new()).await, 3);
    assert!(
        connect(&pg.conninfo("app", &passwords["app"], "postgres"))
            .await
            .is_err(),
        "app still logs in"
    );
}
