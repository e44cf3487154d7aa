//! A unit of work on its way to a database thread and its answer on the way back. The thread
//! runs the work inside a transaction it owns and answers only once that transaction's fate is
//! known, so a caller never sees `Ok` for work that was not committed.

use crate::{Error, Result, Tx};
use tokio::sync::oneshot;

/// Work queued for a database thread.
pub(crate) trait Job: Send {
    /// Runs the work on `tx`; what it returned waits in [`Done`] until the commit.
    fn run(self: Box<Self>, tx: &mut dyn Tx) -> Box<dyn Done>;
    /// Answers `error` without running the work (the transaction could not even begin).
    fn fail(self: Box<Self>, error: Error);
}

/// Work that ran, waiting for its transaction's commit or rollback.
pub(crate) trait Done: Send {
    /// Whether the work returned `Ok` (and so wants its writes committed).
    fn succeeded(&self) -> bool;
    /// Answers the caller: the work's own result if it failed or if `committed` is `Ok`, the
    /// commit's error otherwise.
    fn finish(self: Box<Self>, committed: Result<()>);
}

/// A closure and the channel its caller waits on.
pub(crate) struct Work<F, T, E> {
    work: F,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> Work<F, T, E>
where
    F: FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<Error> + Send + 'static,
{
    /// The job to queue, and the receiver of its answer.
    pub(crate) fn queued(work: F) -> (Box<dyn Job>, oneshot::Receiver<Result<T, E>>) {
        let (reply, answer) = oneshot::channel();
        (Box::new(Work { work, reply }), answer)
    }
}

impl<F, T, E> Job for Work<F, T, E>
where
    F: FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<Error> + Send + 'static,
{
    fn run(self: Box<Self>, tx: &mut dyn Tx) -> Box<dyn Done> {
        let result = (self.work)(tx);
        Box::new(Ran {
            result,
            reply: self.reply,
        })
    }

    fn fail(self: Box<Self>, error: Error) {
        let _ = self.reply.send(Err(error.into()));
    }
}

struct Ran<T, E> {
    result: Result<T, E>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<T: Send, E: From<Error> + Send> Done for Ran<T, E> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn finish(self: Box<Self>, committed: Result<()>) {
        let answer = match (self.result, committed) {
            (Err(own), _) => Err(own),
            (Ok(value), Ok(())) => Ok(value),
            (Ok(_), Err(commit)) => Err(commit.into()),
        };
        let _ = self.reply.send(answer);
    }
}

/// Waits for the answer of queued work. A thread that dropped the work without answering (it
/// panicked in the work, or stopped) is a failure of that work.
pub(crate) async fn answer<T, E: From<Error>>(
    answer: oneshot::Receiver<Result<T, E>>,
) -> Result<T, E> {
    answer.await.unwrap_or_else(|_| {
        Err(Error::Failed("the unit of work panicked or its database thread stopped".into()).into())
    })
}
