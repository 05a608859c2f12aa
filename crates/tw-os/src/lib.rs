//! The few operating-system calls Tidewatch needs that std does not offer, and the settings
//! of the C library's memory allocator: the only crate of the workspace with `unsafe` code,
//! each block with the reason it is sound.

use std::io;

/// How much of a busy CPU a thread gets, relative to the threads at [`ThreadPriority::Normal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThreadPriority {
    /// What threads start with.
    #[default]
    Normal,
    /// A `nice` value (1 … 19): a smaller share while the CPUs are busy, every thread of this
    /// kind still getting one. The kernel weighs each thread on its own, so three threads at
    /// nice 15 together weigh about as much as one at nice 10.
    Nice(i32),
    /// Linux `SCHED_IDLE`: in practice runs only on CPU time no other thread wants (the kernel
    /// weighs it 3, against 15 for nice 19 and 1024 for normal threads), so it is never
    /// starved outright yet takes next to nothing under full load, however many threads of
    /// this kind there are. For work that may fall behind and catch up afterwards.
    Idle,
}

/// Sets the scheduling priority of the calling thread. Linux keeps it per thread, and threads
/// started afterwards by this thread inherit it. Lowering one's own priority needs no
/// privilege; raising it back usually does and fails with `EACCES`/`EPERM`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn set_current_thread_priority(priority: ThreadPriority) -> io::Result<()> {
    let result = match priority {
        ThreadPriority::Normal => return Ok(()),
        // SAFETY: `gettid` takes no arguments and cannot fail; `setpriority` takes plain
        // integers and only changes the scheduling priority of the thread named (this one).
        ThreadPriority::Nice(nice) => unsafe {
            let tid = libc::syscall(libc::SYS_gettid);
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
        },
        ThreadPriority::Idle => {
            let parameters = libc::sched_param { sched_priority: 0 };
            // SAFETY: pid 0 names the calling thread; the kernel only reads `parameters`,
            // which lives until the call returns.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &parameters) }
        }
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere thread priorities are left alone.
#[cfg(not(target_os = "linux"))]
pub fn set_current_thread_priority(priority: ThreadPriority) -> io::Result<()> {
    if priority == ThreadPriority::Normal {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "per-thread priorities are only set on Linux",
    ))
}

/// Stops the kernel from backing this process's memory with transparent huge pages, unless
/// `MIMALLOC_ALLOW_THP` is set (then the allocator's own setting decides).
///
/// mimalloc asks for huge pages for its arenas. Then the first touch of any byte of a 2 MiB
/// region zeroes and maps all of it. In three pairs of 2,000,000-event benchmark runs the
/// server's peak resident memory was 25–86 MB lower without them, and every consumer drained
/// at least as fast (BENCHMARKS.md, session 18). Call it first thing in `main`: it applies to
/// memory mapped afterwards.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn disable_transparent_huge_pages() -> io::Result<()> {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return Ok(());
    }
    // SAFETY: `PR_SET_THP_DISABLE` takes plain integers and only sets a flag of this process
    // that the kernel reads when it faults memory in; no memory of ours is touched.
    let result = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere memory is left as the system backs it.
#[cfg(not(target_os = "linux"))]
pub fn disable_transparent_huge_pages() -> io::Result<()> {
    Ok(())
}

/// Largest block glibc's `malloc` may serve from its heaps (its ceiling for this setting on
/// 64-bit targets); larger ones are mapped and unmapped each time.
pub const C_HEAP_LARGEST_REUSED: usize = 32 << 20;
/// Free memory glibc's `malloc` keeps at the top of a heap before returning it to the kernel.
pub const C_HEAP_KEPT_FREE: usize = 128 << 20;

/// Has glibc's `malloc` keep the memory that C code frees for its next allocations, instead
/// of handing it back to the kernel at once. Rust code uses mimalloc; the C allocator serves
/// zstd, whose contexts (hundreds of KiB each, zeroed when set up) Parquet creates and drops
/// for every column of every file. With glibc's defaults most of them were mapped afresh
/// (blocks over 128 KiB are `mmap`ed until a free raises that limit, and heaps are trimmed at
/// 128 KiB of free space), so each paid its page faults again: a third of the lake consumer's
/// page faults at 200,000 events/s. Kept, they reuse pages already faulted in
/// (BENCHMARKS.md, session 26). Blocks up to `largest_reused` come from the heaps; up to
/// `kept_free` bytes of free space stay at the top of each heap, so resident memory no
/// longer falls back after the C heaps' peaks (in the full benchmark the server's peak rose
/// from ~720 to ~800 MB, one run each).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn retain_freed_c_memory(largest_reused: usize, kept_free: usize) -> io::Result<()> {
    let setting = |name: &str, value: usize| {
        libc::c_int::try_from(value).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name} {value} is too large"),
            )
        })
    };
    let largest_reused = setting("largest_reused", largest_reused)?;
    let kept_free = setting("kept_free", kept_free)?;
    // SAFETY: `mallopt` takes plain integers and only changes the allocator's tuning
    // parameters (it takes the allocator's own lock); no memory of ours is touched.
    let applied = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, largest_reused) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, kept_free) == 1
    };
    if applied {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "glibc refused the malloc settings",
        ))
    }
}

/// Other C libraries keep their own defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn retain_freed_c_memory(_largest_reused: usize, _kept_free: usize) -> io::Result<()> {
    Ok(())
}

/// Appends to `buf` up to `want` bytes of `file` read at byte `pos` (a positional read: the
/// file's own position is neither used nor moved, so readers are safe beside a writer), and
/// returns how many were read: fewer than `want` only at the end of the file.
///
/// The bytes land in `buf`'s spare capacity unzeroed. The log's readers read in 256 KiB chunks
/// that their records then point into, so every chunk is a fresh buffer: zeroing each before
/// the kernel overwrites it was 2.4 % of the detection thread at 200,000 events/s
/// (BENCHMARKS.md, session 24).
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn read_at_into(
    file: &std::fs::File,
    buf: &mut Vec<u8>,
    want: usize,
    pos: u64,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    buf.reserve(want);
    let mut filled = 0;
    while filled < want {
        let spare = buf.spare_capacity_mut();
        let count = (want - filled).min(spare.len());
        let offset = libc::off_t::try_from(pos + filled as u64)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
        // SAFETY: `spare` is the vector's unused, allocated capacity, at least `count` bytes
        // long (reserved above; `filled` bytes of it were taken by earlier rounds through
        // `set_len`). `pread` writes at most `count` bytes there and touches nothing else.
        let read = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast::<libc::c_void>(),
                count,
                offset,
            )
        };
        match read {
            0 => break,
            n if n > 0 => {
                let n = n as usize;
                // SAFETY: the kernel initialised the first `n` bytes of the spare capacity
                // (`n <= count <= spare.len()`), which directly follow the vector's length.
                unsafe { buf.set_len(buf.len() + n) };
                filled += n;
            }
            _ => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
    Ok(filled)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn reads_at_a_position_up_to_the_end_of_the_file() {
        let path = std::env::temp_dir().join(format!("tw-os-read-{}", std::process::id()));
        std::fs::write(&path, b"0123456789").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mut buf = b"x".to_vec();
        assert_eq!(read_at_into(&file, &mut buf, 4, 3).unwrap(), 4);
        assert_eq!(buf, b"x3456");
        assert_eq!(
            read_at_into(&file, &mut buf, 100, 8).unwrap(),
            2,
            "short at the end"
        );
        assert_eq!(buf, b"x345689");
        assert_eq!(read_at_into(&file, &mut buf, 5, 10).unwrap(), 0);
        assert_eq!(buf, b"x345689");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn huge_pages_are_off_for_the_process_after_the_call() {
        let enabled = || {
            std::fs::read_to_string("/proc/self/status")
                .expect("status")
                .lines()
                .find_map(|line| line.strip_prefix("THP_enabled:"))
                .map(|value| value.trim() == "1")
        };
        // (Kernels before 5.0 do not report it; then there is nothing to check.)
        if enabled().is_none() || std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            return;
        }
        disable_transparent_huge_pages().expect("prctl");
        assert_eq!(enabled(), Some(false));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    #[allow(unsafe_code)]
    fn freed_c_memory_is_kept_for_reuse() {
        const BLOCK: usize = 8 << 20;
        retain_freed_c_memory(C_HEAP_LARGEST_REUSED, C_HEAP_KEPT_FREE).expect("settings");
        // SAFETY: a block of plain bytes, freed once, never read or written; `mallinfo2` only
        // reads the allocator's counters.
        let (mapped_while_held, free_after) = unsafe {
            let mapped_before = libc::mallinfo2().hblkhd;
            // `black_box`: the compiler may otherwise drop a block that is never used.
            let block = std::hint::black_box(libc::malloc(BLOCK));
            assert!(!block.is_null());
            let mapped_while_held = libc::mallinfo2().hblkhd - mapped_before;
            libc::free(block);
            (mapped_while_held, libc::mallinfo2().fordblks)
        };
        // With glibc's defaults an 8 MiB block is mapped on its own and unmapped when freed.
        assert_eq!(mapped_while_held, 0, "served from a heap, not mapped");
        assert!(
            free_after >= BLOCK,
            "kept as free heap memory: {free_after} bytes"
        );
    }

    #[test]
    fn settings_beyond_a_c_int_are_refused() {
        let refused = retain_freed_c_memory(usize::MAX, C_HEAP_KEPT_FREE).is_err();
        assert!(refused || cfg!(not(target_env = "gnu")));
    }

    /// Field `number` (1-based, as in `man proc`) of `/proc/thread-self/stat`, for fields
    /// after the command name.
    fn thread_stat_field(number: usize) -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        let after_command = stat.rsplit_once(')').unwrap().1;
        // Field 3 (state) is the first after the command name.
        let field = after_command.split_whitespace().nth(number - 3).unwrap();
        field.parse().expect("numeric field")
    }

    /// The nice value of the calling thread (field 19).
    fn current_nice() -> i32 {
        thread_stat_field(19)
    }

    /// The scheduling policy of the calling thread (field 41).
    fn current_policy() -> i32 {
        thread_stat_field(41)
    }

    #[test]
    fn idle_applies_to_the_calling_thread_and_the_threads_it_starts() {
        let before = current_policy();
        let in_thread = std::thread::spawn(|| {
            set_current_thread_priority(ThreadPriority::Idle)
                .expect("SCHED_IDLE needs no privilege");
            let child = std::thread::spawn(current_policy).join().unwrap();
            (current_policy(), child)
        })
        .join()
        .unwrap();
        assert_eq!(
            in_thread,
            (libc::SCHED_IDLE, libc::SCHED_IDLE),
            "set, and inherited"
        );
        assert_eq!(current_policy(), before, "other threads keep theirs");
    }

    #[test]
    fn lowers_only_the_calling_thread() {
        let before = current_nice();
        let in_thread = std::thread::spawn(move || {
            set_current_thread_priority(ThreadPriority::Nice(before + 5))
                .expect("raising nice needs no privilege");
            let child = std::thread::spawn(current_nice).join().unwrap();
            (current_nice(), child)
        })
        .join()
        .unwrap();
        assert_eq!(in_thread, (before + 5, before + 5), "set, and inherited");
        assert_eq!(current_nice(), before, "other threads keep theirs");
    }
}
