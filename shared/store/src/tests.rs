//! The store's promises, on a real SQLite file: commit on `Ok`, nothing on `Err`, group commit
//! that keeps each unit of work's fate its own, errors sorted by kind, migrations applied once.

use crate::{Backend, Database, Error, Migrations, Options, Tx};
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./test-migrations");
const MIGRATIONS: Migrations = Migrations {
    sqlite: &MIGRATOR,
    postgres: &MIGRATOR,
};

async fn open(dir: &tempfile::TempDir) -> Database {
    let url = format!("sqlite://{}/test.db", dir.path().display());
    let options = Options {
        max_connections: 1,
        patience: Duration::ZERO,
        failpoints: Default::default(),
    };
    Database::open(&url, &options, &MIGRATIONS, |_| {
        vec!["CREATE TABLE IF NOT EXISTS extra (id TEXT)".to_owned()]
    })
    .await
    .expect("open")
}

fn insert(tx: &mut dyn Tx, id: &str, n: i64) -> Result<u64, Error> {
    tx.execute(
        "INSERT INTO things (id, n) VALUES ($1, $2)",
        &[id.into(), n.into()],
    )
}

async fn count(db: &Database) -> i64 {
    db.read(|tx| {
        tx.query_opt("SELECT COUNT(*) FROM things", &[])?
            .expect("a row")
            .take::<i64>(0)
    })
    .await
    .expect("count")
}

#[tokio::test]
async fn work_that_returns_ok_is_committed_and_work_that_fails_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    assert_eq!(db.backend(), Backend::Sqlite);

    db.write(|tx| insert(tx, "a", 1)).await.expect("committed");
    let failed = db
        .write(|tx| {
            insert(tx, "b", 2)?;
            Err::<(), _>(Error::Failed("changed my mind".into()))
        })
        .await;

    assert_eq!(failed, Err(Error::Failed("changed my mind".into())));
    assert_eq!(count(&db).await, 1);
}

#[tokio::test]
async fn concurrent_work_shares_commits_but_a_failure_rolls_back_only_its_own_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;

    // Enough at once that the writer finds many queued and groups them.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200_i64 {
        let db = db.clone();
        tasks.spawn(async move {
            db.write(move |tx| {
                insert(tx, &format!("t{i}"), i)?;
                // Every tenth unit breaks a check constraint after its first insert.
                if i % 10 == 0 {
                    insert(tx, &format!("bad{i}"), -1)?;
                }
                Ok::<_, Error>(i)
            })
            .await
        });
    }
    let results = tasks.join_all().await;

    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 20);
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, Error::Failed(_))),
        "{results:?}"
    );
    assert_eq!(count(&db).await, 180);
}

/// Work queued while the writer is busy is taken together, at most `MAX_GROUP` to a transaction:
/// one unit that breaks the transaction (here by ending it itself) fails the others of its group,
/// and only them. The writer is held inside a first unit until the rest is queued, so which units
/// share a transaction is certain, not a matter of timing.
#[tokio::test]
async fn work_queued_behind_a_busy_writer_commits_in_groups_of_at_most_max_group() {
    use std::future::Future;
    use std::task::Poll;
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;

    let (started, writer_busy) = tokio::sync::oneshot::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let writer = db.clone();
    let holding = tokio::spawn(async move {
        writer
            .write(move |tx| {
                let _ = started.send(());
                released.recv().expect("released");
                insert(tx, "holding", 0)
            })
            .await
    });
    writer_busy.await.expect("the writer runs the first unit");

    // Queued in this order: the breaker first, then enough to fill its group and one more.
    let mut queued = Vec::new();
    for i in 0..=crate::sqlite::MAX_GROUP {
        let mut work = Box::pin(db.write(move |tx| {
            insert(tx, &format!("q{i}"), i64::try_from(i).expect("small"))?;
            if i == 0 {
                tx.execute("ROLLBACK", &[])?;
            }
            Ok::<_, Error>(())
        }));
        // One poll hands the unit to the writer's queue.
        std::future::poll_fn(|cx| {
            assert!(work.as_mut().poll(cx).is_pending(), "the writer is busy");
            Poll::Ready(())
        })
        .await;
        queued.push(work);
    }
    release.send(()).expect("the first unit waits");
    holding.await.unwrap().expect("the first unit commits");

    let mut results = Vec::new();
    for work in queued {
        results.push(work.await);
    }
    let (last, group) = results.split_last().expect("many");
    assert!(
        group.iter().all(Result::is_err),
        "one transaction for the group: {results:?}"
    );
    assert_eq!(
        last,
        &Ok(()),
        "the one past MAX_GROUP starts the next transaction"
    );
    assert_eq!(count(&db).await, 2);
}

#[tokio::test]
async fn a_duplicate_key_is_a_unique_violation() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    db.write(|tx| insert(tx, "a", 1)).await.unwrap();

    let again = db.write(|tx| insert(tx, "a", 1)).await;

    assert!(
        again.as_ref().is_err_and(Error::is_unique_violation),
        "{again:?}"
    );
}

#[tokio::test]
async fn reads_cannot_write_and_see_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    db.write(|tx| insert(tx, "a", 1)).await.unwrap();

    let written = db.read(|tx| insert(tx, "b", 2)).await;

    assert!(written.is_err());
    assert_eq!(count(&db).await, 1);
    assert!(db.ping().await);
}

#[tokio::test]
async fn reopening_applies_no_migration_twice_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    db.write(|tx| insert(tx, "a", 1)).await.unwrap();
    db.close().await;
    drop(db);

    let db = open(&dir).await;

    assert_eq!(count(&db).await, 1);
}

#[tokio::test]
async fn a_panicking_unit_of_work_fails_alone_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;

    let panicked = db
        .write(|tx| {
            insert(tx, "a", 1)?;
            if tx.backend() == Backend::Sqlite {
                panic!("a bug in the work");
            }
            Ok::<_, Error>(())
        })
        .await;
    db.write(|tx| insert(tx, "b", 1))
        .await
        .expect("the writer still works");

    assert!(panicked.is_err());
    assert_eq!(count(&db).await, 1);
}

#[test]
fn the_backend_and_the_file_come_from_the_url() {
    assert_eq!(Backend::from_url("sqlite://a/b.db"), Some(Backend::Sqlite));
    assert_eq!(
        Backend::from_url("postgres://h/db"),
        Some(Backend::Postgres)
    );
    assert_eq!(Backend::from_url("mysql://h/db"), None);
    assert_eq!(
        crate::sqlite_path("sqlite://data/x.db?mode=rwc"),
        "data/x.db"
    );
    assert_eq!(crate::sqlite_path("sqlite::memory:"), ":memory:");
}

/// Why opening `url` failed.
async fn refused(url: &str) -> String {
    let options = Options {
        max_connections: 1,
        patience: Duration::ZERO,
        failpoints: Default::default(),
    };
    Database::open(url, &options, &MIGRATIONS, |_| Vec::new())
        .await
        .expect_err("unsupported")
        .to_string()
}

#[tokio::test]
async fn an_unsupported_url_is_refused_naming_its_scheme_and_nothing_else() {
    let mysql = refused("mysql://u:pw-4711@h/db").await;
    let no_scheme = refused("u%3Apw-4711@h/db").await;

    assert!(
        mysql.contains("\"mysql\"") && !mysql.contains("pw-4711"),
        "{mysql}"
    );
    assert!(
        no_scheme.contains("(not a URL)") && !no_scheme.contains("pw-4711"),
        "{no_scheme}"
    );
}

#[tokio::test]
async fn each_sqlite_connection_keeps_a_small_page_cache_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let pragma = |tx: &mut dyn Tx| {
        tx.query_opt("PRAGMA cache_size", &[])?
            .expect("a row")
            .take::<i64>(0)
    };

    let writer = db.write(pragma).await.expect("writer");
    let reader = db.read(pragma).await.expect("reader");

    // Negative: KiB, not pages; SQLite's own default is -2000 on each.
    assert_eq!(writer, -1024);
    assert_eq!(reader, -512);
}

#[tokio::test]
async fn after_a_write_fails_for_lack_of_space_ping_asks_a_write_to_commit_before_it_answers_true()
{
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let probes = || async {
        db.read(|tx| {
            tx.query_opt("SELECT COUNT(*) FROM store_probe", &[])?
                .expect("a row")
                .take::<i64>(0)
        })
        .await
        .expect("count")
    };
    assert!(db.ping().await);
    assert_eq!(probes().await, 0, "a healthy database is only read");

    // The file may not grow: SQLite answers "database or disk is full" as a full disk would.
    let full = db
        .write(|tx| {
            let pages = tx
                .query_opt("PRAGMA page_count", &[])?
                .expect("a row")
                .take::<i64>(0)?;
            tx.query(&format!("PRAGMA max_page_count = {pages}"), &[])?;
            for n in 0..1000 {
                insert(tx, &"x".repeat(4000), n)?;
            }
            Ok::<_, Error>(())
        })
        .await;
    let answered = db.ping().await;

    assert!(matches!(full, Err(Error::Unavailable(_))), "{full:?}");
    // The probe's row fits in its table's page, so the write commits and clears the failure.
    assert!(answered);
    assert_eq!(probes().await, 1, "ping wrote its probe");
    assert!(db.ping().await);
    assert_eq!(probes().await, 1, "and reads again once a write committed");
}
