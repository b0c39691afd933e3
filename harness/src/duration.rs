//! Durations as people write them, read by `humantime` (the same parser the
//! `#[service_test(timeout = "...")]` attribute uses): `500ms`, `10s`,
//! `2m`, `1h 30m`.

use std::time::Duration;

/// Parses a duration such as `500ms`, `10s`, `2m` or `1m 30s`. The error
/// says what was expected.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration `{text}`: {e}; expected e.g. `500ms`, `10s` or `1m 30s`")
    })
}

/// Parses a timeout: a duration of at least 1ms (a test with no time at
/// all cannot run), as the attribute checks it.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let d = parse(text)?;
    if d < Duration::from_millis(1) {
        return Err(format!(
            "invalid duration `{text}`: a timeout must be at least 1ms"
        ));
    }
    Ok(d)
}

/// Formats a duration the way [`parse`] reads it (`250ms`, `10s`, `1.5s`
/// is written `1s 500ms`).
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms % 1_000 == 0 {
        format!("{}s", ms / 1_000)
    } else {
        format!("{}s {}ms", ms / 1_000, ms % 1_000)
    }
}
