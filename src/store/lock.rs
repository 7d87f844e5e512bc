//! `.lock`: one declab process per results folder at a time, on one machine or across the hosts
//! of a cluster that share the folder.
//!
//! * **Taken atomically, with its content**: the holder's record is written to a private file,
//!   then hard-linked to `.lock` (`link` fails when the name exists: the classic lock that also
//!   holds on NFS), so nobody ever reads a half-written lock.
//! * **The record**: host name, pid, the pid's start time, its pid namespace and the boot id, a
//!   random token, the start time.
//! * **A heartbeat**: the holder touches `.lock` every [`HEARTBEAT`] and checks that it still
//!   holds its token; a holder that finds its lock taken stops the process at once, before it
//!   writes another byte beside the new holder.
//! * **Stale locks**: on the holder's own machine (same host, boot and pid namespace) a lock is
//!   stale when its pid is gone or now belongs to a process started at another time (so a
//!   container's pid 1 is not mistaken for a live holder, nor a reused pid). Anywhere else it is
//!   stale when its heartbeat is older than [`LEASE`]. A live lock is refused with who holds it
//!   and the command that breaks it.
//! * **Breaking a stale lock** happens under a second lock (`.lock.break`, taken the same way):
//!   the breaker checks again that `.lock` is the stale one it saw (same token) before removing
//!   it, then competes for `.lock` like everyone else. Two processes that find the same stale
//!   lock cannot both take the folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

/// How often a holder touches its lock.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A lock from another machine whose heartbeat is older than this is stale.
pub const LEASE: Duration = Duration::from_secs(60);

const LOCK: &str = ".lock";
const BREAK: &str = ".lock.break";

/// Exclusive lock on a results folder, released on drop.
pub struct DirLock {
    path: PathBuf,
    token: String,
    /// Dropping it stops the heartbeat thread.
    stop: Option<mpsc::Sender<()>>,
    beat: Option<std::thread::JoinHandle<()>>,
}

/// Who holds a lock, as its file says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Holder {
    host: String,
    pid: u32,
    pid_start: String,
    pid_ns: String,
    boot_id: String,
    token: String,
    started: String,
}

impl Holder {
    fn me(token: String) -> Holder {
        Holder {
            host: super::host_name(),
            pid: std::process::id(),
            pid_start: pid_start(std::process::id()).unwrap_or_default(),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            token,
            started: super::now(),
        }
    }

    fn to_text(&self) -> String {
        format!(
            "declab lock\nhost={}\npid={}\npid_start={}\npid_ns={}\nboot_id={}\ntoken={}\nstarted={}\n",
            self.host,
            self.pid,
            self.pid_start,
            self.pid_ns,
            self.boot_id,
            self.token,
            self.started
        )
    }

    /// `None` unless the text is a complete record.
    fn parse(text: &str) -> Option<Holder> {
        let mut h = Holder::default();
        let mut complete = false;
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.to_string();
            match k {
                "host" => h.host = v,
                "pid" => h.pid = v.parse().ok()?,
                "pid_start" => h.pid_start = v,
                "pid_ns" => h.pid_ns = v,
                "boot_id" => h.boot_id = v,
                "token" => h.token = v,
                "started" => {
                    h.started = v;
                    complete = true;
                }
                _ => {}
            }
        }
        (complete && !h.token.is_empty()).then_some(h)
    }

    /// Whether this process can tell by pid if the holder lives: same host, boot and pid
    /// namespace.
    fn same_machine(&self, me: &Holder) -> bool {
        !self.boot_id.is_empty()
            && self.host == me.host
            && self.boot_id == me.boot_id
            && self.pid_ns == me.pid_ns
    }
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`, clock ticks since boot).
fn pid_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name (field 2) may hold spaces and parentheses: fields follow the last ')'
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_string)
}

/// Why a lock is not taken: held by a live process, or being written/broken right now.
enum Busy {
    Held(Holder, Duration),
    Unreadable,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        // (a name, not an experiment's randomness: it need not come from the seed)
        let token = format!("{:016x}", rand::random::<u64>());
        let me = Holder::me(token.clone());
        let path = dir.join(LOCK);
        // a few rounds: a stale lock is broken in one, then taken in the next
        for _ in 0..4 {
            match try_link(dir, &path, &me) {
                Ok(true) => return Ok(DirLock::started(path, token)),
                Ok(false) => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot create lock file {}", path.display()))
                }
            }
            match examine(&path, &me) {
                // gone meanwhile: try again
                None => continue,
                Some(Ok(stale)) => break_stale(dir, &path, &me, &stale)?,
                Some(Err(Busy::Held(h, age))) => bail!(
                    "{} is in use by another declab process: {} on {} (pid {}), since {}, last heartbeat {} s ago. \
                     Wait for it, or use another --out. If that process is gone (a crashed host), the lock is \
                     taken over {} s after its last heartbeat, or break it now with: rm {}",
                    dir.display(),
                    if h.same_machine(&me) { "a live process" } else { "a process" },
                    h.host,
                    h.pid,
                    h.started,
                    age.as_secs(),
                    LEASE.as_secs(),
                    path.display()
                ),
                Some(Err(Busy::Unreadable)) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        bail!(
            "cannot take the lock {}: other processes keep taking it; try again",
            path.display()
        )
    }

    fn started(path: PathBuf, token: String) -> DirLock {
        let (tx, rx) = mpsc::channel::<()>();
        let (p, t) = (path.clone(), token.clone());
        let beat = std::thread::Builder::new()
            .name("declab-lock".into())
            .spawn(move || heartbeat(&p, &t, rx))
            .ok();
        DirLock {
            path,
            token,
            stop: Some(tx),
            beat,
        }
    }

    /// Where the lock file is now (after the folder holding it was renamed).
    pub fn moved_to(&mut self, dir: &Path) {
        self.stop_heartbeat();
        self.path = dir.join(LOCK);
    }

    fn stop_heartbeat(&mut self) {
        drop(self.stop.take());
        if let Some(b) = self.beat.take() {
            let _ = b.join();
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        self.stop_heartbeat();
        // only our own lock: never remove one another process took over
        if read_holder(&self.path).is_some_and(|h| h.token == self.token) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Touch the lock every [`HEARTBEAT`] until told to stop; exit the process if the lock is no
/// longer ours (another process judged it stale and took the folder).
fn heartbeat(path: &Path, token: &str, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(HEARTBEAT) {
        match read_holder(path) {
            Some(h) if h.token == token => {
                if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
                    let _ = f.set_modified(SystemTime::now());
                }
            }
            other => {
                let who = other
                    .map(|h| format!("{} (pid {})", h.host, h.pid))
                    .unwrap_or_else(|| "nobody (the lock file is gone)".into());
                eprintln!(
                    "declab: error: lost the lock {} to {who}; stopping before writing anything more",
                    path.display()
                );
                std::process::exit(1);
            }
        }
    }
}

fn read_holder(path: &Path) -> Option<Holder> {
    Holder::parse(&std::fs::read_to_string(path).ok()?)
}

/// Write `me` to a private file and link it to `lock` (false: the name exists).
fn try_link(dir: &Path, lock: &Path, me: &Holder) -> std::io::Result<bool> {
    let tmp = dir.join(format!(".lock.{}.{}", me.pid, me.token));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(me.to_text().as_bytes())?;
        f.sync_all()?;
    }
    let r = std::fs::hard_link(&tmp, lock);
    let _ = std::fs::remove_file(&tmp);
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// The lock at `path`: `None` if gone, `Ok(holder)` if stale, `Err` if live or unreadable.
fn examine(path: &Path, me: &Holder) -> Option<std::result::Result<Holder, Busy>> {
    let meta = std::fs::metadata(path).ok()?;
    let age = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    let text = std::fs::read_to_string(path).ok()?;
    let Some(h) = Holder::parse(&text) else {
        // a lock in an older format or damaged: stale once its heartbeat would have stopped
        return Some(if age > LEASE {
            Ok(Holder {
                token: format!("unparsed:{}", text.len()),
                ..Holder::default()
            })
        } else {
            Err(Busy::Unreadable)
        });
    };
    let alive = if h.same_machine(me) {
        pid_start(h.pid).is_some_and(|s| s == h.pid_start)
    } else {
        age <= LEASE
    };
    Some(if alive {
        Err(Busy::Held(h, age))
    } else {
        Ok(h)
    })
}

/// Remove `lock` if it is still the stale one seen (`stale`), under `.lock.break`.
fn break_stale(dir: &Path, lock: &Path, me: &Holder, stale: &Holder) -> Result<()> {
    let brk = dir.join(BREAK);
    if !try_link(dir, &brk, me)? {
        let age = std::fs::metadata(&brk)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        if age > LEASE {
            bail!(
                "{} was left by a process that stopped while breaking a stale lock; remove it: rm {}",
                brk.display(),
                brk.display()
            );
        }
        // another process is breaking it: let it finish, then look again
        std::thread::sleep(Duration::from_millis(50));
        return Ok(());
    }
    let same = match std::fs::read_to_string(lock) {
        Ok(text) => match Holder::parse(&text) {
            Some(h) => h.token == stale.token,
            None => stale.token == format!("unparsed:{}", text.len()),
        },
        Err(_) => false,
    };
    if same {
        eprintln!(
            "declab: taking over {}: its holder{} is gone",
            dir.display(),
            if stale.host.is_empty() {
                String::new()
            } else {
                format!(" ({} pid {})", stale.host, stale.pid)
            }
        );
        let _ = std::fs::remove_file(lock);
    }
    let _ = std::fs::remove_file(&brk);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder_on(host: &str, pid: u32, token: &str) -> Holder {
        Holder {
            host: host.into(),
            pid,
            pid_start: "1".into(),
            pid_ns: "pid:[1]".into(),
            boot_id: "another-boot".into(),
            token: token.into(),
            started: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn age(path: &Path, secs: u64) {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn the_record_round_trips_and_a_partial_one_is_not_read() {
        let me = Holder::me("abc".into());
        assert_eq!(Holder::parse(&me.to_text()), Some(me.clone()));
        let text = me.to_text();
        assert_eq!(Holder::parse(&text[..text.len() / 2]), None);
        assert!(!me.pid_start.is_empty(), "/proc/self/stat is readable");
        assert!(me.same_machine(&Holder::me("x".into())));
    }

    #[test]
    fn a_held_lock_refuses_and_goes_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let lock_file = dir.path().join(LOCK);
        {
            let _held = DirLock::acquire(dir.path()).unwrap();
            let text = std::fs::read_to_string(&lock_file).unwrap();
            assert!(
                text.contains(&format!("pid={}", std::process::id())),
                "{text}"
            );
            // this process is alive: a second acquisition (another thread) is refused
            let err = DirLock::acquire(dir.path()).err().unwrap().to_string();
            assert!(err.contains("in use by another declab process"), "{err}");
            assert!(
                err.contains(&format!("rm {}", lock_file.display())),
                "{err}"
            );
        }
        assert!(!lock_file.exists(), "the lock goes with its holder");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(names.is_empty(), "no temporary files left: {names:?}");
    }

    #[test]
    fn stale_locks_are_taken_over_and_live_ones_on_other_hosts_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let lock_file = dir.path().join(LOCK);
        let me = Holder::me("t".into());

        // this machine, a pid that is gone (or reused by a process started at another time)
        let mut dead = me.clone();
        dead.pid_start = "0".into();
        dead.token = "dead".into();
        std::fs::write(&lock_file, dead.to_text()).unwrap();
        drop(DirLock::acquire(dir.path()).unwrap());

        // another host, heartbeat fresh: refused, whatever its pid means here
        std::fs::write(&lock_file, holder_on("node17", 1, "live").to_text()).unwrap();
        let err = DirLock::acquire(dir.path()).err().unwrap().to_string();
        assert!(err.contains("on node17 (pid 1)"), "{err}");
        assert!(
            err.contains("taken over 60 s after its last heartbeat"),
            "{err}"
        );
        assert!(lock_file.is_file(), "a live holder's lock is left alone");

        // its heartbeat stopped longer ago than the lease: taken over
        age(&lock_file, LEASE.as_secs() + 5);
        let held = DirLock::acquire(dir.path()).unwrap();
        assert_eq!(read_holder(&lock_file).unwrap().token, held.token);
        drop(held);

        // an unreadable lock: busy while fresh (being written), stale once old
        std::fs::write(&lock_file, "12345\n").unwrap();
        assert!(DirLock::acquire(dir.path()).is_err());
        age(&lock_file, LEASE.as_secs() + 5);
        drop(DirLock::acquire(dir.path()).unwrap());

        // a break lock left by a crash is reported with the command that clears it
        std::fs::write(&lock_file, holder_on("node17", 1, "old").to_text()).unwrap();
        age(&lock_file, LEASE.as_secs() + 5);
        std::fs::write(dir.path().join(BREAK), "x").unwrap();
        age(&dir.path().join(BREAK), LEASE.as_secs() + 5);
        let err = DirLock::acquire(dir.path()).err().unwrap().to_string();
        assert!(err.contains("rm "), "{err}");
        assert!(err.contains(".lock.break"), "{err}");
    }

    /// Threads that find the same stale lock at once: exactly one takes the folder.
    #[test]
    fn many_contenders_for_one_stale_lock_one_wins() {
        for round in 0..8 {
            let dir = tempfile::tempdir().unwrap();
            let lock_file = dir.path().join(LOCK);
            std::fs::write(&lock_file, holder_on("gone", 9, "stale").to_text()).unwrap();
            age(&lock_file, LEASE.as_secs() + 5);
            let barrier = std::sync::Barrier::new(8);
            let won = std::sync::atomic::AtomicUsize::new(0);
            std::thread::scope(|s| {
                for _ in 0..8 {
                    s.spawn(|| {
                        barrier.wait();
                        if let Ok(l) = DirLock::acquire(dir.path()) {
                            won.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            // hold it until every contender has tried
                            std::thread::sleep(Duration::from_millis(300));
                            drop(l);
                        }
                    });
                }
            });
            assert_eq!(won.into_inner(), 1, "round {round}");
            assert!(!lock_file.exists());
        }
    }

    #[test]
    fn a_holder_whose_lock_is_taken_does_not_remove_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let lock_file = dir.path().join(LOCK);
        let held = DirLock::acquire(dir.path()).unwrap();
        std::fs::write(&lock_file, holder_on("node2", 5, "theirs").to_text()).unwrap();
        // (the heartbeat would stop the process; dropping first stops the heartbeat)
        drop(held);
        assert_eq!(read_holder(&lock_file).unwrap().token, "theirs");
    }
}
