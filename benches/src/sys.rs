//! Linux process facts the harness reads and sets: CPU affinity, the open-files
//! limit, CPU time and memory of a process tree (from `/proc`), and free
//! loopback ports.

use std::io;
use std::net::TcpListener;

/// Number of CPUs this process may run on.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The CPUs this process may run on (its affinity mask), in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data that sched_getaffinity fills in.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..cpu_count()).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pin the calling thread (and what it later spawns) to one CPU.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it, and
    // sched_setaffinity reads `size_of::<cpu_set_t>()` bytes from it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Prepare a child process: it gets SIGTERM when the harness dies (so nothing
/// outlives an interrupted run) and, with `cpu`, starts pinned to that CPU (all
/// its threads inherit it).
pub fn prepare_command(cmd: &mut std::process::Command, cpu: Option<usize>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (prctl, sched_setaffinity) on stack data.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(cpu) = cpu {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_ZERO(&mut set);
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Raise the soft open-files limit to the hard one, and both to `want` when the
/// hard one is lower and the process may raise it (root); children started later
/// inherit it. Returns the new soft limit.
pub fn raise_nofile_limit(want: u64) -> io::Result<u64> {
    // SAFETY: getrlimit/setrlimit read and write a plain struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if (lim.rlim_max as u64) < want {
            let higher = libc::rlimit {
                rlim_cur: want as libc::rlim_t,
                rlim_max: want as libc::rlim_t,
            };
            // without the privilege this fails: keep the hard limit we have
            if libc::setrlimit(libc::RLIMIT_NOFILE, &higher) == 0 {
                return Ok(want);
            }
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(lim.rlim_cur as u64)
    }
}

/// The current soft open-files limit.
pub fn nofile_limit() -> io::Result<u64> {
    // SAFETY: getrlimit writes a plain struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(lim.rlim_cur as u64)
    }
}

/// Clock ticks per second for `/proc/PID/stat` times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// `(ppid, utime + stime in ticks)` of one process.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name may hold spaces and parentheses: fields start after the last ')'
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// `pid` and all its descendants (nginx's master and workers, for example).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            {
                if let Some((ppid, _)) = stat(p) {
                    all.push((p, ppid));
                }
            }
        }
    }
    let mut tree = vec![pid];
    let mut k = 0;
    while k < tree.len() {
        let parent = tree[k];
        tree.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        k += 1;
    }
    tree
}

/// CPU seconds (user + system) used so far by a process tree.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks: u64 = pids.iter().filter_map(|&p| stat(p)).map(|(_, t)| t).sum();
    ticks as f64 / ticks_per_second()
}

/// Peak resident memory (sum of `VmHWM`) of a process tree, in bytes.
pub fn peak_rss(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&p| status_kb(p, "VmHWM:"))
        .sum::<u64>()
        * 1024
}

/// Resident memory now (sum of `VmRSS`) of a process tree, in bytes.
pub fn rss(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&p| status_kb(p, "VmRSS:"))
        .sum::<u64>()
        * 1024
}

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A TCP port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral
/// range (`ip_local_port_range`).
///
/// Why not port 0: the kernel hands out ports from the ephemeral range, the range
/// outgoing connections take their local port from. A target that connects out
/// before it binds (the pipeline gateway to Redis and its services) can be given
/// the very port just picked for its listener, and then never binds it.
pub fn free_port() -> io::Result<u16> {
    let below = ephemeral_low().unwrap_or(32768);
    if below > LOWEST_PORT {
        for _ in 0..256 {
            let port = rand::random_range(LOWEST_PORT..below);
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Ports the harness picks from start here (clear of the well-known and registered
/// services most machines run below it).
const LOWEST_PORT: u16 = 20000;

/// The first port of the kernel's ephemeral range.
fn ephemeral_low() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// The 1-minute load average (for the report: how busy the machine was).
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_cpu_time_and_memory() {
        let me = std::process::id();
        // burn CPU until at least one clock tick is accounted (bounded: 5 s)
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while cpu_seconds(&[me]) == 0.0 && start.elapsed().as_secs() < 5 {
            for k in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(k);
            }
        }
        std::hint::black_box(x);
        assert!(cpu_seconds(&[me]) > 0.0);
        assert!(peak_rss(&[me]) > 1024 * 1024);
        assert!(rss(&[me]) > 1024 * 1024 && rss(&[me]) <= peak_rss(&[me]));
        assert!(process_tree(me).contains(&me));
    }

    #[test]
    fn free_ports_are_bindable_and_outside_the_ephemeral_range() {
        let below = ephemeral_low().unwrap_or(32768);
        for _ in 0..50 {
            let port = free_port().unwrap();
            if below > LOWEST_PORT {
                assert!((LOWEST_PORT..below).contains(&port), "{port}");
            }
            TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }
}
