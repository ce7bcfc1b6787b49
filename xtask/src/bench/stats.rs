//! Median, min and max of a figure over runs, and how the report writes them.

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// None for no samples. The median of an even count is the mean of the middle two.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|s| s.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            n,
        })
    }

    /// `12.3 ms (9.1–15.0)`, in the unit `unit` with `fmt` for each number.
    pub fn show(&self, unit: &str, fmt: fn(f64) -> String) -> String {
        format!(
            "{} {unit} ({}–{})",
            fmt(self.median),
            fmt(self.min),
            fmt(self.max)
        )
    }
}

/// Milliseconds: one decimal below 100, none above (the noise of a shared VM is larger).
pub fn ms(value: f64) -> String {
    if value.abs() < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// MB (10^6 bytes, as the goal is written) with one decimal.
pub fn mb(value: f64) -> String {
    format!("{value:.1}")
}

/// `a ÷ b` as `0.08×`; two significant digits are all the noise allows.
pub fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 || !a.is_finite() || !b.is_finite() {
        return "n/a".into();
    }
    let r = a / b;
    if r >= 10.0 {
        format!("{r:.0}×")
    } else if r >= 1.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        let s = Summary::of(&[5.0, 1.0, 3.0]).expect("samples");
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 5.0, 3));
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).expect("samples");
        assert_eq!(s.median, 2.5);
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[f64::NAN]).is_none());
    }

    #[test]
    fn formats() {
        assert_eq!(ms(9.94), "9.9");
        assert_eq!(ms(123.4), "123");
        assert_eq!(ratio(10.0, 120.0), "0.08×");
        assert_eq!(ratio(3.0, 2.0), "1.5×");
        assert_eq!(ratio(1.0, 0.0), "n/a");
        let s = Summary::of(&[1.0, 2.0, 3.0]).expect("samples");
        assert_eq!(s.show("ms", ms), "2.0 ms (1.0–3.0)");
    }
}
