//! The wall-clock budget every file is read under (`--file-timeout`).
//!
//! An extract worker hands each file's extraction to a helper thread and waits for what it
//! sends at most the budget each time. Past it the worker reports the file as failed and goes
//! on with a new helper: the old one is abandoned, to finish or stop at its own limits (the
//! PDF reader checks the same deadline itself), and whatever it sends later is dropped. So no
//! file, however it loops inside a parser, can stop the run.

use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};

type Job = Box<dyn FnOnce() + Send>;

/// A worker's helper thread and the budget it is held to.
pub struct Watchdog {
    budget: Duration,
    helper: Option<Sender<Job>>,
}

/// The budget ran out before the extraction sent anything more.
#[derive(Debug, PartialEq, Eq)]
pub struct TimedOut;

/// What one extraction sends, received under the budget.
pub struct Watched<T> {
    results: Receiver<T>,
    budget: Duration,
}

impl<T> Watched<T> {
    /// The next thing the extraction sent; `Ok(None)` when it finished (or died) without
    /// sending more. A timeout leaves the helper abandoned: call [`Watchdog::abandon`].
    pub fn next(&self) -> Result<Option<T>, TimedOut> {
        match self.results.recv_timeout(self.budget) {
            Ok(value) => Ok(Some(value)),
            Err(RecvTimeoutError::Timeout) => Err(TimedOut),
            Err(RecvTimeoutError::Disconnected) => Ok(None),
        }
    }
}

impl Watchdog {
    pub fn new(budget: Duration) -> Watchdog {
        Watchdog {
            budget,
            helper: None,
        }
    }

    /// Runs `job` on the helper thread. It sends its results down the channel it is given,
    /// which holds one: a job that streams waits for each to be taken, and stops when a send
    /// fails (the worker gave up on it).
    pub fn run<T: Send + 'static>(
        &mut self,
        job: impl FnOnce(&Sender<T>) + Send + 'static,
    ) -> Result<Watched<T>, String> {
        let (tx, results) = bounded(1);
        let mut job: Job = Box::new(move || job(&tx));
        // A helper that is gone gives the job back: start another.
        for _ in 0..2 {
            let helper = match &self.helper {
                Some(helper) => helper,
                None => self.helper.insert(spawn_helper()?),
            };
            match helper.send(job) {
                Ok(()) => {
                    return Ok(Watched {
                        results,
                        budget: self.budget,
                    })
                }
                Err(returned) => {
                    job = returned.0;
                    self.helper = None;
                }
            }
        }
        Err("cannot start a thread to read the file".into())
    }

    /// The next thing `watched` sent, or the reason a file fails without it: the helper could
    /// not start, the budget ran out (the helper is then abandoned), or the job ended without
    /// sending it.
    pub fn next<T>(&mut self, watched: &Result<Watched<T>, String>) -> Result<T, String> {
        let watched = watched.as_ref().map_err(String::clone)?;
        match watched.next() {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err("internal error while reading".into()),
            Err(TimedOut) => {
                self.abandon();
                Err(format!(
                    "timed out: still reading after {} s (raise --file-timeout)",
                    self.budget.as_secs_f64()
                ))
            }
        }
    }

    /// Leaves the current helper to itself (it is stuck in a job past the budget); the next
    /// job starts a new one. The old helper exits once its job ends.
    pub fn abandon(&mut self) {
        self.helper = None;
    }
}

fn spawn_helper() -> Result<Sender<Job>, String> {
    let (tx, jobs) = unbounded::<Job>();
    std::thread::Builder::new()
        .name("extract-helper".into())
        .spawn(move || {
            for job in jobs {
                // A job catches its own panics to report them; this keeps the helper alive
                // if one escapes (the job's channel then closes, which reads as its end).
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        })
        .map_err(|e| format!("cannot start a thread to read the file: {e}"))?;
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn results_arrive_in_order_then_the_end() {
        let mut dog = Watchdog::new(Duration::from_secs(10));
        let watched = dog
            .run(|tx: &Sender<u32>| {
                for i in 0..3 {
                    tx.send(i).unwrap();
                }
            })
            .unwrap();
        let got: Vec<_> = std::iter::from_fn(|| watched.next().unwrap()).collect();
        assert_eq!(got, [0, 1, 2]);
        // The same helper serves the next job.
        let watched = dog.run(|tx: &Sender<&str>| tx.send("again").unwrap());
        assert_eq!(watched.unwrap().next(), Ok(Some("again")));
    }

    #[test]
    fn a_job_that_never_ends_times_out_and_the_next_runs_on_a_new_helper() {
        let mut dog = Watchdog::new(Duration::from_millis(100));
        let (release_tx, release) = bounded::<()>(0);
        let started = Instant::now();
        let stuck = dog
            .run(move |tx: &Sender<u32>| {
                let _ = release.recv();
                let _ = tx.send(1);
            })
            .unwrap();
        assert_eq!(stuck.next(), Err(TimedOut));
        assert!(started.elapsed() < Duration::from_secs(5));
        dog.abandon();
        let next = dog.run(|tx: &Sender<u32>| tx.send(2).unwrap()).unwrap();
        assert_eq!(next.next(), Ok(Some(2)));
        drop(release_tx);
    }

    #[test]
    fn a_job_that_panics_ends_its_results_and_the_helper_lives_on() {
        let mut dog = Watchdog::new(Duration::from_secs(10));
        let watched = dog.run(|_: &Sender<u32>| panic!("boom")).unwrap();
        assert_eq!(watched.next(), Ok(None));
        let next = dog.run(|tx: &Sender<u32>| tx.send(7).unwrap()).unwrap();
        assert_eq!(next.next(), Ok(Some(7)));
    }
}
