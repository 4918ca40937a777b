//! Database bootstrap against the real Postgres.

use kit::db::{self, PoolSettings};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("tests/migrations");

#[tokio::test]
async fn creates_the_database_and_migrates_once_when_two_instances_start_together() {
    let url = testkit::fresh_database_url("kit_migrate");
    let settings = PoolSettings::default();

    let (a, b) = tokio::join!(
        db::connect_and_migrate(&url, &MIGRATOR, &settings),
        db::connect_and_migrate(&url, &MIGRATOR, &settings),
    );
    let pool = a.expect("first instance starts");
    b.expect("second instance starts");

    let notes: Vec<String> = sqlx::query_scalar("SELECT note FROM probe ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("probe table");
    assert_eq!(notes, ["migrated", "second"]);
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("migration table");
    assert_eq!(applied, 2);

    // A restart finds everything applied and changes nothing.
    let again = db::connect_and_migrate(&url, &MIGRATOR, &settings)
        .await
        .expect("restart");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM probe")
        .fetch_one(&again)
        .await
        .expect("count");
    assert_eq!(count, 2);

    pool.close().await;
    again.close().await;
    testkit::drop_database(&url).await;
}

#[tokio::test]
async fn rejects_database_names_that_would_need_quoting() {
    let url = format!("{}/bad-name;drop", testkit::postgres_base());
    let err = db::ensure_database(&url).await.expect_err("bad name");
    assert!(matches!(err, db::DbError::BadName(_)), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error() {
    // Port 1 is never Postgres.
    let err = db::ensure_database("postgres://postgres@127.0.0.1:1/shop_nothing")
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, db::DbError::Connect(_)), "{err}");
}
