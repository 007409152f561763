//! SQLite pools: WAL, synchronous=FULL, foreign keys on, migrations at start.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, SqlitePool};

/// A database that could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    /// Opening the file failed.
    #[error("cannot open database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    /// A migration failed.
    #[error("cannot migrate database {path}: {source}")]
    Migrate {
        path: String,
        source: sqlx::migrate::MigrateError,
    },
}

/// Result of opening a database.
pub type DbResult<T> = Result<T, DbError>;

/// Creates `data_dir` if needed, then opens `file_name` in it with [`open_sqlite`].
pub async fn open_in_data_dir(
    data_dir: &Path,
    file_name: &str,
    migrator: &Migrator,
) -> DbResult<SqlitePool> {
    std::fs::create_dir_all(data_dir).map_err(|source| DbError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    open_sqlite(&data_dir.join(file_name), migrator).await
}

/// Opens (creating if needed) the SQLite database at `path` and runs `migrator`.
pub async fn open_sqlite(path: &Path, migrator: &Migrator) -> DbResult<SqlitePool> {
    let display = path.display().to_string();
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|source| DbError::Open {
            path: display.clone(),
            source,
        })?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        // A connection whose COMMIT failed (a full disk) is still inside its transaction: it is closed rather
        // than handed out again, where every `BEGIN` on it would fail until a restart.
        .after_release(|connection, _| Box::pin(async move { Ok(!connection.is_in_transaction()) }))
        .connect_with(options)
        .await
        .map_err(|source| DbError::Open {
            path: display.clone(),
            source,
        })?;
    migrator
        .run(&pool)
        .await
        .map_err(|source| DbError::Migrate {
            path: display,
            source,
        })?;
    Ok(pool)
}

/// Why the database cannot write for now, when `error` is a condition that passes (a full disk, an I/O
/// error, the database busy past the timeout) rather than a bug: the text to show, saying what to do.
pub fn transient_reason(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            Some(format!("database unavailable: {error}"))
        }
        sqlx::Error::Database(database) => {
            // SQLite's result code, its low byte the primary code (extended codes add detail above it).
            let primary = database
                .code()
                .and_then(|code| code.parse::<i32>().ok())
                .map(|code| code & 0xff);
            match primary {
                // SQLITE_FULL: the disk under the data directory is full.
                Some(13) => Some(format!(
                    "the disk under the data directory is full ({database}); free space there, the work goes on by itself"
                )),
                // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR.
                Some(5 | 6 | 10) => Some(format!("database unavailable: {database}")),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Begins a transaction that will write: `BEGIN IMMEDIATE` takes the write lock at once, waiting for another
/// writer up to the busy timeout. A deferred transaction that reads first and writes later can instead fail
/// at once with "database is locked" when another connection wrote in between (WAL snapshots cannot upgrade).
pub async fn write_transaction(
    pool: &SqlitePool,
) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}
