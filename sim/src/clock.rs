//! Simulated clock: real time stretched by `time_scale`, used only by the limit windows.

use std::time::Instant;

/// Nanoseconds in one simulated second.
pub const SECOND_NS: u64 = 1_000_000_000;
/// Nanoseconds in one simulated minute.
pub const MINUTE_NS: u64 = 60 * SECOND_NS;

/// Monotonic simulated time in nanoseconds since the clock was made.
#[derive(Debug, Clone)]
pub struct SimClock {
    anchor_real: Instant,
    anchor_sim_ns: u64,
    scale: f64,
}

impl SimClock {
    /// A clock starting at 0 that runs `scale` times faster than real time.
    pub fn new(scale: f64) -> SimClock {
        SimClock {
            anchor_real: Instant::now(),
            anchor_sim_ns: 0,
            scale,
        }
    }

    /// Current simulated time.
    pub fn now_ns(&self) -> u64 {
        let real = self.anchor_real.elapsed().as_nanos() as f64;
        self.anchor_sim_ns + (real * self.scale) as u64
    }

    /// The current scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Changes the speed without a jump: simulated time stays continuous.
    pub fn set_scale(&mut self, scale: f64) {
        self.anchor_sim_ns = self.now_ns();
        self.anchor_real = Instant::now();
        self.scale = scale;
    }

    /// Real milliseconds that `sim_ns` of simulated time take, rounded up.
    pub fn real_ms(&self, sim_ns: u64) -> u64 {
        (sim_ns as f64 / self.scale / 1_000_000.0).ceil() as u64
    }
}

/// Formats milliseconds like Go's `time.Duration` (`12ms`, `1s`, `1.5s`, `6m0s`), as OpenAI does.
pub fn go_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, frac) = (rest / 1000, rest % 1000);
    let mut secs = s.to_string();
    if frac > 0 {
        let f = format!("{frac:03}");
        secs.push('.');
        secs.push_str(f.trim_end_matches('0'));
    }
    if h > 0 {
        format!("{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_match_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(12), "12ms");
        assert_eq!(go_duration(1000), "1s");
        assert_eq!(go_duration(1500), "1.5s");
        assert_eq!(go_duration(360_000), "6m0s");
        assert_eq!(go_duration(61_234), "1m1.234s");
        assert_eq!(go_duration(3_600_000), "1h0m0s");
    }

    #[test]
    fn scaled_clock_runs_faster() {
        let mut c = SimClock::new(1000.0);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(c.now_ns() >= 5 * SECOND_NS);
        let before = c.now_ns();
        c.set_scale(1.0);
        assert!(c.now_ns() >= before);
        assert_eq!(c.real_ms(SECOND_NS), 1000);
    }
}
