//! Exact money: purchase amounts are decimal strings, summed as decimals, never floats.

use rust_decimal::{Decimal, RoundingStrategy};

/// Why a `purchaseAmount` string is not an amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoneyError {
    /// Not of the form `123` or `123.45`.
    NotDecimal,
    /// A minus sign.
    Negative,
    /// More digits than an exact decimal can hold (28 significant digits).
    TooLarge,
    /// Above [`MAX_AMOUNT`].
    AboveMaximum,
}

/// The largest `purchaseAmount` accepted: one trillion. Far above any real purchase, and
/// low enough that sums of amounts cannot overflow an exact decimal (about 7.9e28) before
/// ten quadrillion purchases.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(0xD4A5_1000, 0xE8, 0, false, 0);

impl std::fmt::Display for MoneyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MoneyError::NotDecimal => "must be a decimal string such as \"149.99\"",
            MoneyError::Negative => "must not be negative",
            MoneyError::TooLarge => "has more digits than an exact decimal can hold (28)",
            MoneyError::AboveMaximum => "must be at most 1000000000000 (one trillion)",
        })
    }
}

impl std::error::Error for MoneyError {}

/// Parses a `purchaseAmount`: plain digits with an optional fraction (`"149.99"`, `"0"`,
/// `"10.5"`). Exponents, signs, spaces and a bare `"."` are refused, so what the producer
/// wrote is exactly what is summed.
pub fn parse_amount(s: &str) -> Result<Decimal, MoneyError> {
    let unsigned = match s.strip_prefix('-') {
        Some(rest) if is_plain_decimal(rest) => return Err(MoneyError::Negative),
        Some(_) => return Err(MoneyError::NotDecimal),
        None => s,
    };
    if !is_plain_decimal(unsigned) {
        return Err(MoneyError::NotDecimal);
    }
    // A Decimal holds 28 significant digits exactly; refuse more rather than round.
    let significant = unsigned
        .trim_start_matches('0')
        .bytes()
        .filter(u8::is_ascii_digit)
        .count();
    if significant > MAX_DIGITS {
        return Err(MoneyError::TooLarge);
    }
    let amount = Decimal::from_str_exact(unsigned).map_err(|_| MoneyError::TooLarge)?;
    if amount > MAX_AMOUNT {
        return Err(MoneyError::AboveMaximum);
    }
    Ok(amount)
}

const MAX_DIGITS: usize = 28;

fn is_plain_decimal(s: &str) -> bool {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// Formats money as the API reports it: a decimal string with exactly two places,
/// half-way cases rounded away from zero (`"10450.25"`).
pub fn format_money(amount: Decimal) -> String {
    let rounded = amount.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    format!("{rounded:.2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_decimals_parse_exactly() {
        assert_eq!(
            parse_amount("149.99").map(|d| d.to_string()),
            Ok("149.99".into())
        );
        assert_eq!(parse_amount("0").map(|d| d.to_string()), Ok("0".into()));
        assert_eq!(
            parse_amount("007.50").map(|d| d.to_string()),
            Ok("7.50".into())
        );
    }

    #[test]
    fn anything_but_a_plain_non_negative_decimal_is_refused() {
        for bad in [
            "", ".", "1.", ".5", "1e3", " 1", "1 ", "+1", "1,5", "abc", "--1", "0x10",
        ] {
            assert_eq!(parse_amount(bad), Err(MoneyError::NotDecimal), "{bad:?}");
        }
        assert_eq!(parse_amount("-1.00"), Err(MoneyError::Negative));
        assert_eq!(
            parse_amount("9000000000000000000000000000"),
            Err(MoneyError::AboveMaximum)
        );
        assert_eq!(
            parse_amount("1000000000000.01"),
            Err(MoneyError::AboveMaximum)
        );
        assert_eq!(parse_amount("1000000000000.00"), Ok(MAX_AMOUNT));
        assert_eq!(
            parse_amount("123456789012345678901234567890.5"),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(
            parse_amount("0.12345678901234567890123456789"),
            Err(MoneyError::TooLarge)
        );
    }

    #[test]
    fn sums_are_exact_where_floats_are_not() {
        let total: Decimal = ["0.10", "0.20"]
            .iter()
            .filter_map(|s| parse_amount(s).ok())
            .sum();
        assert_eq!(format_money(total), "0.30");
        assert_ne!(0.1_f64 + 0.2_f64, 0.3_f64);
    }

    #[test]
    fn money_is_formatted_with_two_places() {
        let d = |s: &str| parse_amount(s).unwrap_or_default();
        assert_eq!(format_money(d("10450.25")), "10450.25");
        assert_eq!(format_money(d("7")), "7.00");
        assert_eq!(format_money(d("0.005")), "0.01");
        assert_eq!(format_money(d("2.5")), "2.50");
        assert_eq!(format_money(Decimal::ZERO), "0.00");
    }
}
