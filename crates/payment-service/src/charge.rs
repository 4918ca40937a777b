//! The simulated charge (DESIGN.md, "Payment simulation"): deterministic, so tests and the
//! smoke runner can steer the saga to either end.

/// What an order without a card token pays with.
pub const DEFAULT_CARD_TOKEN: &str = "tok_visa";

/// Every token starting with this is declined (`tok_decline_insufficient`, ...).
pub const DECLINE_PREFIX: &str = "tok_decline";

/// `Ok` when the charge goes through, otherwise the reason it was refused.
///
/// A declining token wins over the amount limit: the card is what the customer can change.
pub fn decide(card_token: &str, total_cents: i64, limit_cents: i64) -> Result<(), String> {
    let token = match card_token.trim() {
        "" => DEFAULT_CARD_TOKEN,
        token => token,
    };
    if token.starts_with(DECLINE_PREFIX) {
        return Err("card declined".to_owned());
    }
    if total_cents > limit_cents {
        return Err(format!("amount over the limit of {limit_cents} cents"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: i64 = 1_000_000;

    #[test]
    fn a_normal_card_under_the_limit_pays() {
        assert_eq!(decide("tok_visa", 1250, LIMIT), Ok(()));
        assert_eq!(decide("tok_mastercard", 1, LIMIT), Ok(()));
    }

    #[test]
    fn an_empty_token_is_the_default_card() {
        assert_eq!(decide("", 1250, LIMIT), Ok(()));
        assert_eq!(decide("   ", 1250, LIMIT), Ok(()));
    }

    #[test]
    fn declining_tokens_fail() {
        for token in [
            "tok_decline",
            "tok_decline_insufficient",
            " tok_decline_stolen ",
        ] {
            assert_eq!(
                decide(token, 1250, LIMIT),
                Err("card declined".to_owned()),
                "{token:?}"
            );
        }
        assert_eq!(decide("tok_declin", 1250, LIMIT), Ok(()), "prefix only");
    }

    #[test]
    fn the_limit_is_inclusive() {
        assert_eq!(decide("tok_visa", LIMIT, LIMIT), Ok(()));
        assert_eq!(
            decide("tok_visa", LIMIT + 1, LIMIT),
            Err("amount over the limit of 1000000 cents".to_owned())
        );
        assert_eq!(
            decide("", 501, 500),
            Err("amount over the limit of 500 cents".to_owned())
        );
    }

    #[test]
    fn a_declined_card_is_reported_before_the_limit() {
        assert_eq!(
            decide("tok_decline_x", LIMIT + 1, LIMIT),
            Err("card declined".to_owned())
        );
    }
}
