//! Durations as people write them: `500ms`, `10s`, `2m`, `1h`, `1.5s`.

use std::time::Duration;

/// Parses `<number><unit>` with unit `ms`, `s`, `m` or `h` (a fraction is
/// allowed: `1.5s`). The error says what was expected.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let factor_ms = match unit.trim() {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => f64::NAN,
    };
    match num.parse::<f64>() {
        Ok(n) if factor_ms.is_finite() && n.is_finite() && n >= 0.0 => Ok(Duration::from_micros(
            (n * factor_ms * 1_000.0).round() as u64,
        )),
        _ => Err(format!(
            "invalid duration `{text}`: expected a number and a unit (ms, s, m, h), e.g. `500ms` or `10s`"
        )),
    }
}

/// Formats a duration the way [`parse`] reads it (`250ms`, `10s`, `1.5s`).
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms % 1_000 == 0 {
        format!("{}s", ms / 1_000)
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}
