//! What the bench measures besides the wall clock: CPU time of the threads of one Tokio runtime
//! (from `/proc/self/task/<tid>/schedstat`, in nanoseconds), live heap bytes (a counting global
//! allocator, switched on only while measuring), and the process's resident set (`VmRSS`).

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        Arc, Mutex,
    },
};

/// The threads of one runtime, registered by `on_thread_start`.
#[derive(Clone, Default)]
pub struct Threads(Arc<Mutex<Vec<String>>>);

impl Threads {
    /// Registers the calling thread.
    pub fn register(&self) {
        // "/proc/thread-self" links to "<pid>/task/<tid>".
        if let Ok(link) = std::fs::read_link("/proc/thread-self") {
            let path = format!("/proc/{}/schedstat", link.display());
            self.0.lock().unwrap().push(path);
        }
    }

    /// CPU time the registered threads have run so far, in nanoseconds (exited threads drop
    /// out: only the runtimes' long-lived workers matter here).
    pub fn cpu_ns(&self) -> u64 {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }
}

/// The system allocator, counting live bytes while [`COUNTING`] is on.
pub struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Starts counting: bytes allocated from now on, minus those freed from now on.
pub fn start_counting() {
    LIVE.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
}

/// Stops counting and returns the net bytes allocated since [`start_counting`].
pub fn stop_counting() -> i64 {
    COUNTING.store(false, Ordering::SeqCst);
    LIVE.load(Ordering::SeqCst)
}

/// The process's resident set in bytes (`VmRSS` in `/proc/self/status`).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
