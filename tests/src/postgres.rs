//! PostgreSQL for the integration tests: each test gets a schema of its own in the test
//! database (so tests run in parallel on one server) and drops it at the end.

use std::time::Duration;

use sqlx::{PgPool, postgres::PgPoolOptions};

/// The test database: `OFFLOAD_TEST_DATABASE_URL`, else the local default.
pub fn database_url() -> String {
    std::env::var("OFFLOAD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// `url` with its `search_path` set to `schema` (a libpq `options` parameter, which sqlx reads).
pub fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

/// A test's own schema in the test database.
pub struct PgSchema {
    /// The schema's name.
    pub name: String,
    /// `OFFLOAD_DATABASE_URL` for the API processes: the test database, this schema.
    pub url: String,
    admin: PgPool,
    removed: bool,
}

impl PgSchema {
    /// Creates a fresh schema; fails the test with the fix if PostgreSQL is not answering.
    pub async fn create() -> Self {
        let base = database_url();
        let fix = "Start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                   (or run scripts/test.sh, which starts it), or point OFFLOAD_TEST_DATABASE_URL at a server.";
        let connect = PgPoolOptions::new().max_connections(1).connect(&base);
        let admin = match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(pool)) => pool,
            Ok(Err(e)) => panic!("PostgreSQL is not answering at {base}: {e}. {fix}"),
            Err(_) => panic!("PostgreSQL at {base} did not answer within 5 s. {fix}"),
        };
        let name = format!("offload_it_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create schema {name}: {e}"));
        PgSchema {
            url: with_search_path(&base, &name),
            name,
            admin,
            removed: false,
        }
    }

    /// Drops the schema and everything in it.
    pub async fn remove(mut self) {
        self.removed = true;
        drop_schema(&self.admin, &self.name).await;
        self.admin.close().await;
    }
}

impl Drop for PgSchema {
    /// A test that failed before [`PgSchema::remove`] still drops its schema, from a thread of
    /// its own because the test's runtime may be gone.
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let name = self.name.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(admin) = PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&database_url())
                    .await
                {
                    drop_schema(&admin, &name).await;
                    admin.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

async fn drop_schema(admin: &PgPool, name: &str) {
    let sql = format!("DROP SCHEMA IF EXISTS {name} CASCADE");
    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(admin).await {
        eprintln!("could not drop test schema {name}: {e}");
    }
}
