//! The thread that reads the web config and the files it names (certificate, key, client CA)
//! for reloads, after the exporter gave up its capabilities.
//!
//! A key file readable only by its owner (0600, owned by another user, as a secret volume or
//! a certificate tool leaves it) is read at start with the capabilities the process then
//! holds; once every thread has given them up, uid 0 alone cannot read it, and a rotated key
//! would never apply. This thread keeps CAP_DAC_READ_SEARCH — read and search, no write, no
//! other file access — in its permitted set only, and raises it into its effective set only
//! while it runs a read of the web config; every other thread keeps nothing.
//! `privileges::verify` allows exactly that set on exactly this thread.

use std::sync::{Mutex, mpsc};

use caps::CapSet;

use crate::privileges::{WEB_CONFIG_READER_KEEPS as READER_KEEPS, WEB_CONFIG_READER_THREAD as THREAD_NAME};

type Job = Box<dyn FnOnce() + Send>;

/// Runs reads on the reader thread.
#[derive(Debug)]
pub struct ConfigReader {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl ConfigReader {
    /// Start the thread; call it while the caller still holds the capability (the thread
    /// inherits the caller's sets and gives up all but [`READER_KEEPS`]).
    pub fn start() -> std::io::Result<ConfigReader> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new().name(THREAD_NAME.into()).spawn(move || {
            crate::privileges::drop_thread_or_log(&[READER_KEEPS], "web config reader");
            // Held, not used: effective only while a read runs.
            let _ = caps::clear(None, CapSet::Effective);
            for job in rx {
                let raised = caps::raise(None, CapSet::Effective, READER_KEEPS).is_ok();
                job();
                if raised && let Err(error) = caps::clear(None, CapSet::Effective) {
                    tracing::error!(%error, "web config reader: cannot lower its capability again");
                }
            }
        })?;
        Ok(ConfigReader { jobs: Mutex::new(tx) })
    }

    /// Run `read` on the reader thread and return what it returns (None if the thread is gone).
    pub fn run<T: Send + 'static>(&self, read: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .lock()
            .ok()?
            .send(Box::new(move || {
                let _ = tx.send(read());
            }))
            .ok()?;
        rx.recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_run_on_the_reader_thread_which_keeps_at_most_its_one_capability() {
        let r = ConfigReader::start().expect("thread");
        let (name, tid, permitted, effective) = r
            .run(|| {
                (
                    std::thread::current().name().map(str::to_string),
                    // SAFETY: gettid has no preconditions.
                    unsafe { libc::gettid() },
                    caps::read(None, CapSet::Permitted).expect("permitted"),
                    caps::read(None, CapSet::Effective).expect("effective"),
                )
            })
            .expect("ran");
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
        assert!(permitted.iter().all(|c| *c == READER_KEEPS), "{permitted:?}");
        assert_eq!(effective, permitted, "raised while reading");
        // Between reads it is lowered (the thread lowers it after handing the result over).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !caps::read(Some(tid), CapSet::Effective).expect("the reader's effective set").is_empty() {
            assert!(std::time::Instant::now() < deadline, "still raised after the read");
            std::thread::yield_now();
        }
    }
}
