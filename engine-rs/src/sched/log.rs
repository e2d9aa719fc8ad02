//! Log lines to stderr in SGLang's format: `[YYYY-MM-DD HH:MM:SS] message` (UTC).

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn parse(s: &str) -> Result<Level, String> {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Ok(Level::Debug),
            "info" => Ok(Level::Info),
            "warning" | "warn" => Ok(Level::Warning),
            "error" | "critical" => Ok(Level::Error),
            other => Err(format!("unknown log_level {other:?}")),
        }
    }
}

#[derive(Clone, Copy)]
pub struct Logger {
    pub level: Level,
}

impl Logger {
    pub fn log(&self, level: Level, msg: &str) {
        if level >= self.level {
            eprintln!("[{}] {msg}", timestamp());
        }
    }
    pub fn info(&self, msg: &str) {
        self.log(Level::Info, msg)
    }
    /// An info line of one tensor-parallel rank, tagged as SGLang tags them (`[time TP1] ...`).
    pub fn info_rank(&self, rank: usize, msg: &str) {
        if Level::Info >= self.level {
            eprintln!("[{} TP{rank}] {msg}", timestamp());
        }
    }
    pub fn warn(&self, msg: &str) {
        self.log(Level::Warning, msg)
    }
    pub fn enabled(&self, level: Level) -> bool {
        level >= self.level
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC (no time-zone database needed).
pub fn timestamp() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format_utc(secs)
}

fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_known_instants() {
        assert_eq!(super::format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_utc(1_739_992_685), "2025-02-19 19:18:05");
        assert_eq!(super::format_utc(951_782_400), "2000-02-29 00:00:00");
    }
}
