//! Decimal text without the formatting machinery, for strings built on hot paths
//! (routing explanations, model-choice reasons): `format!` with floats cost a fifth of
//! model selection before these existed.

use std::fmt::Write as _;

/// The decimal digits of `v`, written right-aligned into `buf` (no allocation).
pub fn u64_digits(v: u64, buf: &mut [u8; 20]) -> &str {
    let mut rest = v;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or_default()
}

/// Appends the decimal digits of `v`.
pub fn push_u64(out: &mut String, v: u64) {
    out.push_str(u64_digits(v, &mut [0u8; 20]));
}

/// Appends `v` with two decimals, like `{:.2}` except that exact halves round away from
/// zero. Non-finite and huge values (|v| ≥ 1e15) go through `Display`.
#[inline]
pub fn push_fixed2(out: &mut String, v: f64) {
    // Round half away from zero without a libm call: truncation of a non-negative value.
    // Below 10 (similarities, rates, difficulties; `y` is below 1000 exactly when the
    // rounded hundredths are, and never for NaN or infinities): the four characters
    // from a table, one copy.
    let y = v.abs() * 100.0 + 0.5;
    if y < 1000.0 {
        let x = y as usize;
        if v < 0.0 && x > 0 {
            out.push('-');
        }
        let at = x * 4;
        out.push_str(FIXED2.get(at..at + 4).unwrap_or_default());
        return;
    }
    push_fixed2_wide(out, v);
}

/// [`push_fixed2`] from 10 up (and for non-finite values), out of line so the common
/// case stays small.
#[cold]
#[inline(never)]
fn push_fixed2_wide(out: &mut String, v: f64) {
    if !v.is_finite() || v.abs() >= 1e15 {
        let _ = write!(out, "{v:.2}");
        return;
    }
    let x = (v.abs() * 100.0 + 0.5) as u64;
    if v < 0.0 {
        out.push('-');
    }
    push_u64(out, x / 100);
    out.push('.');
    out.push(char::from(b'0' + (x / 10 % 10) as u8));
    out.push(char::from(b'0' + (x % 10) as u8));
}

/// `"0.00"`, `"0.01"`, …, `"9.99"`: four bytes for each hundredth below 10.
const FIXED2_BYTES: [u8; 4000] = {
    let mut t = [0u8; 4000];
    let mut x = 0;
    while x < 1000 {
        t[4 * x] = b'0' + (x / 100) as u8;
        t[4 * x + 1] = b'.';
        t[4 * x + 2] = b'0' + (x / 10 % 10) as u8;
        t[4 * x + 3] = b'0' + (x % 10) as u8;
        x += 1;
    }
    t
};

/// [`FIXED2_BYTES`] as text (ASCII only).
const FIXED2: &str = match std::str::from_utf8(&FIXED2_BYTES) {
    Ok(s) => s,
    Err(_) => "",
};

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed2(x: f64) -> String {
        let mut s = String::new();
        push_fixed2(&mut s, x);
        s
    }

    #[test]
    fn fixed2_matches_float_formatting() {
        for x in [
            0.0,
            0.004,
            0.005,
            0.05,
            0.1,
            0.123,
            0.5,
            0.999,
            0.996,
            1.0,
            2.345_6,
            17.0,
            -0.25,
            -0.001,
            9.994,
            9.996,
            1234.5678,
            -98765.4321,
        ] {
            let ours = fixed2(x);
            let std = format!("{x:.2}");
            // Rounding of exact halves may differ in the last digit; nothing else may.
            let diff = (ours.parse::<f64>().unwrap() - std.parse::<f64>().unwrap()).abs();
            assert!(diff <= 0.010_000_1, "{x}: {ours} vs {std}");
            assert_eq!(ours.split('.').nth(1).map(str::len), Some(2), "{ours}");
        }
        assert_eq!(fixed2(0.35), "0.35");
        assert_eq!(fixed2(1.0), "1.00");
        assert_eq!(fixed2(-0.001), "0.00");
        assert_eq!(fixed2(-2.5), "-2.50");
        assert_eq!(fixed2(123.456), "123.46");
        assert_eq!(fixed2(0.006), "0.01");
        assert_eq!(fixed2(1.234), "1.23");
        assert_eq!(fixed2(f64::NAN), "NaN");
        assert_eq!(fixed2(f64::INFINITY), "inf");
        assert_eq!(fixed2(2e20), format!("{:.2}", 2e20));
    }

    #[test]
    fn fixed2_table_equals_the_digits_of_every_hundredth_below_ten() {
        for x in 0..1000u32 {
            let want = format!("{}.{}{}", x / 100, x / 10 % 10, x % 10);
            assert_eq!(fixed2(f64::from(x) / 100.0), want, "{x}");
            if x > 0 {
                assert_eq!(fixed2(-f64::from(x) / 100.0), format!("-{want}"), "-{x}");
            }
        }
    }

    #[test]
    fn integers() {
        for v in [0, 7, 10, 99, 1_000_001, u64::MAX] {
            let mut s = String::new();
            push_u64(&mut s, v);
            assert_eq!(s, v.to_string());
            assert_eq!(u64_digits(v, &mut [0u8; 20]), v.to_string());
        }
    }
}
