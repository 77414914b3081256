//! Ordering across parallel workers: the writer consumes files strictly in discovery order.
//!
//! Three bounds keep memory flat while workers run ahead:
//! - a window of credits: at most `window` files are between discovery and the writer;
//! - a turnstile: a file that streams many pieces (a big dataset) may send its first piece
//!   early, but further pieces only once it is the file the writer is waiting for. So the
//!   writer buffers at most one piece per file in the window;
//! - a byte budget: a piece is sent only while the text of the pieces in flight (sent, not
//!   yet written) stays within it. Counting files or rows alone lets a window of long files
//!   or book-length rows hold gigabytes. The piece of the file the writer waits for always
//!   goes (it is what frees the rest), as does any piece when nothing is in flight.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};

/// How often waiters look at the abort flag.
const POLL: Duration = Duration::from_millis(50);

pub struct Order {
    credits_in: Sender<()>,
    credits_out: Receiver<()>,
    head: Mutex<Head>,
    moved: Condvar,
    aborted: AtomicBool,
    budget: usize,
}

/// The file the writer waits for, and the text bytes in flight.
#[derive(Default)]
struct Head {
    file: usize,
    bytes: usize,
}

impl Order {
    /// At most `window` files and (see the module doc) `budget` bytes of text in flight.
    pub fn new(window: usize, budget: usize) -> Order {
        let (credits_in, credits_out) = bounded(window);
        for _ in 0..window {
            // The channel holds exactly `window` credits, so these sends cannot block or fail.
            let _ = credits_in.send(());
        }
        let head = Mutex::new(Head::default());
        let (moved, aborted) = (Condvar::new(), AtomicBool::new(false));
        Order {
            credits_in,
            credits_out,
            head,
            moved,
            aborted,
            budget,
        }
    }

    /// Discovery takes a credit before handing a file to the workers; false once aborted.
    pub fn acquire(&self) -> bool {
        while !self.aborted.load(Ordering::Relaxed) {
            if self.credits_out.recv_timeout(POLL).is_ok() {
                return true;
            }
        }
        false
    }

    /// Blocks until `file` is the one the writer is waiting for; false once aborted.
    pub fn wait_turn(&self, file: usize) -> bool {
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        while head.file < file && !self.aborted.load(Ordering::Relaxed) {
            head = self
                .moved
                .wait_timeout(head, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        !self.aborted.load(Ordering::Relaxed)
    }

    /// Blocks until a piece of `file` holding `bytes` of text fits the budget, and counts it
    /// in flight; false once aborted.
    pub fn reserve(&self, file: usize, bytes: usize) -> bool {
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        while head.bytes > 0
            && head.bytes.saturating_add(bytes) > self.budget
            && head.file != file
            && !self.aborted.load(Ordering::Relaxed)
        {
            head = self
                .moved
                .wait_timeout(head, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        head.bytes = head.bytes.saturating_add(bytes);
        !self.aborted.load(Ordering::Relaxed)
    }

    /// The writer took a piece that [`Order::reserve`]d `bytes`.
    pub fn release(&self, bytes: usize) {
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        head.bytes = head.bytes.saturating_sub(bytes);
        drop(head);
        self.moved.notify_all();
    }

    /// The writer gave up: release everyone who waits.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::Relaxed);
        self.moved.notify_all();
    }

    /// The writer finished `file`: the next one may stream, and a new file may enter.
    pub fn finished(&self, file: usize) {
        self.head.lock().unwrap_or_else(|p| p.into_inner()).file = file + 1;
        self.moved.notify_all();
        let _ = self.credits_in.try_send(());
    }
}

/// Puts pieces numbered `(file, seq)` back in order; a piece with `last` ends its file.
pub struct Reorder<T> {
    pending: std::collections::BTreeMap<(usize, u32), (T, bool)>,
    next: (usize, u32),
}

impl<T> Default for Reorder<T> {
    fn default() -> Self {
        Reorder {
            pending: Default::default(),
            next: (0, 0),
        }
    }
}

impl<T> Reorder<T> {
    /// Adds one piece and returns those now ready, in order, each with its `last` flag.
    pub fn push(&mut self, file: usize, seq: u32, last: bool, item: T) -> Vec<(usize, T, bool)> {
        self.pending.insert((file, seq), (item, last));
        let mut ready = Vec::new();
        while let Some((item, last)) = self.pending.remove(&self.next) {
            ready.push((self.next.0, item, last));
            self.next = if last {
                (self.next.0 + 1, 0)
            } else {
                (self.next.0, self.next.1 + 1)
            };
        }
        ready
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reorder_releases_in_file_then_piece_order() {
        let mut r = Reorder::default();
        assert!(r.push(1, 0, true, "b").is_empty());
        assert!(r.push(0, 1, true, "a1").is_empty());
        let ready = r.push(0, 0, false, "a0");
        let names: Vec<_> = ready.iter().map(|x| x.1).collect();
        assert_eq!(names, ["a0", "a1", "b"]);
        assert!(r.is_empty());
    }

    #[test]
    fn turnstile_waits_for_the_writer() {
        let order = std::sync::Arc::new(Order::new(2, 100));
        let o = order.clone();
        let waiter = std::thread::spawn(move || {
            assert!(o.wait_turn(2));
            o.head.lock().unwrap().file
        });
        order.finished(0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!waiter.is_finished());
        order.finished(1);
        assert_eq!(waiter.join().unwrap(), 2);
    }

    #[test]
    fn the_byte_budget_holds_pieces_back_except_the_writers_file() {
        let order = std::sync::Arc::new(Order::new(8, 100));
        // Nothing in flight: even a piece over the budget goes.
        assert!(order.reserve(1, 150));
        // The file the writer waits for (0) always goes.
        assert!(order.reserve(0, 10));
        let o = order.clone();
        let waiter = std::thread::spawn(move || o.reserve(2, 10));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!waiter.is_finished());
        order.release(150);
        assert!(waiter.join().unwrap());
        assert_eq!(order.head.lock().unwrap().bytes, 20);
    }
}
