//! `workers`: how many gateway processes `kmsgate serve` runs on the token
//! (DESIGN.md decision 15), from the config or `--workers`.

use std::str::FromStr;

use serde::Deserialize;

/// The number of worker processes: a count, or `auto` (one per core, the
/// default: what `scripts/bench --workers-sweep` measured best). `1` is one
/// gateway process with no supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workers {
    One,
    Count(usize),
    #[default]
    Auto,
}

/// More would exhaust a token's sessions long before they helped.
pub const MAX_WORKERS: usize = 256;

/// The cores this process may use, as the scheduler reports them.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `auto` (`None`) or a count from 1 to [`MAX_WORKERS`], for the key `key`.
fn count_or_auto(key: &str, s: &str) -> Result<Option<usize>, String> {
    if s == "auto" {
        return Ok(None);
    }
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "{key} must be `auto` or a number from 1 to {MAX_WORKERS}, got `{s}`"
        )),
    }
}

/// A TOML integer or string, as the text [`FromStr`] parses.
fn count_or_word<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Count(u64),
        Word(String),
    }
    Ok(match Repr::deserialize(d)? {
        Repr::Count(n) => n.to_string(),
        Repr::Word(w) => w,
    })
}

impl Workers {
    /// The number of processes to run (`auto`: the cores this process may
    /// use, as the scheduler reports them).
    pub fn resolve(self) -> usize {
        match self {
            Workers::One => 1,
            Workers::Count(n) => n,
            Workers::Auto => cores().min(MAX_WORKERS),
        }
    }
}

impl FromStr for Workers {
    type Err = String;

    fn from_str(s: &str) -> Result<Workers, String> {
        Ok(match count_or_auto("workers", s)? {
            None => Workers::Auto,
            Some(1) => Workers::One,
            Some(n) => Workers::Count(n),
        })
    }
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Workers, D::Error> {
        count_or_word(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Runtime threads in each worker process: a count, or `auto` (the cores
/// shared out among the workers, at least one each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkerThreads {
    #[default]
    Auto,
    Count(usize),
}

impl WorkerThreads {
    /// The async runtime threads each of `workers` processes runs. With a
    /// worker per core, one thread each: measured faster on 2 cores than
    /// every worker running a thread per core (docs/benchmarks.md).
    pub fn resolve(self, workers: usize) -> usize {
        match self {
            WorkerThreads::Count(n) => n,
            WorkerThreads::Auto => (cores() / workers.max(1)).max(1),
        }
    }
}

impl FromStr for WorkerThreads {
    type Err = String;

    fn from_str(s: &str) -> Result<WorkerThreads, String> {
        Ok(count_or_auto("worker_threads", s)?.map_or(WorkerThreads::Auto, WorkerThreads::Count))
    }
}

impl<'de> Deserialize<'de> for WorkerThreads {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WorkerThreads, D::Error> {
        count_or_word(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_a_count_or_auto() {
        assert_eq!("1".parse(), Ok(Workers::One));
        assert_eq!("4".parse(), Ok(Workers::Count(4)));
        assert_eq!(
            "auto".parse::<Workers>().map(|w| w.resolve() >= 1),
            Ok(true)
        );
        assert!("0".parse::<Workers>().is_err());
        assert!("many".parse::<Workers>().is_err());
        assert!("100000".parse::<Workers>().is_err());
        #[derive(Deserialize)]
        struct T {
            workers: Workers,
        }
        let t: T = toml::from_str("workers = 3").unwrap();
        assert_eq!(t.workers, Workers::Count(3));
        let t: T = toml::from_str("workers = \"auto\"").unwrap();
        assert_eq!(t.workers, Workers::Auto);
        assert!(toml::from_str::<T>("workers = 0").is_err());
    }

    #[test]
    fn worker_threads_share_out_the_cores() {
        assert_eq!(WorkerThreads::Count(3).resolve(8), 3);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(WorkerThreads::Auto.resolve(1), cores);
        assert_eq!(WorkerThreads::Auto.resolve(cores), 1);
        assert_eq!(WorkerThreads::Auto.resolve(cores * 4), 1);
        #[derive(Deserialize)]
        struct T {
            worker_threads: WorkerThreads,
        }
        let t: T = toml::from_str("worker_threads = 2").unwrap();
        assert_eq!(t.worker_threads, WorkerThreads::Count(2));
        let t: T = toml::from_str("worker_threads = \"auto\"").unwrap();
        assert_eq!(t.worker_threads, WorkerThreads::Auto);
        assert!(toml::from_str::<T>("worker_threads = 0").is_err());
        assert!(toml::from_str::<T>("worker_threads = \"many\"").is_err());
    }
}
