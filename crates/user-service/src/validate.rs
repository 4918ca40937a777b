//! Input rules for users, kept apart from the handlers so they are tested on their own.

use unicode_normalization::UnicodeNormalization;

/// Trimmed, in Unicode's composed form (NFC) and lower-cased: `" Ann@Example.COM "` and
/// `"ann@example.com"` are one account, and so are an `é` typed as one character and as
/// `e` plus a combining accent, which look the same.
pub fn normalise_email(email: &str) -> String {
    email.trim().nfc().collect::<String>().to_lowercase()
}

/// Characters that print as nothing: two addresses differing only by them would look the
/// same and be two accounts.
fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}'
        )
}

/// A pragmatic check (one `@`, a dotted domain, no spaces or invisible characters, at most
/// 254 characters); whether the address exists is for a confirmation mail to find out, not
/// a regex.
pub fn check_email(email: &str) -> Result<(), String> {
    let Some((local, domain)) = email.split_once('@') else {
        return Err("email must contain @".into());
    };
    if email.len() > 254 {
        return Err("email is longer than 254 characters".into());
    }
    if local.is_empty()
        || domain.contains('@')
        || email.chars().any(|c| c.is_whitespace() || is_invisible(c))
    {
        return Err("email is not an address".into());
    }
    let labels: Vec<_> = domain.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
        return Err("email domain is not valid".into());
    }
    Ok(())
}

pub const MIN_PASSWORD: usize = 8;
/// Hashing is deliberately slow; an unbounded password would make it a denial of service.
pub const MAX_PASSWORD: usize = 1024;

pub fn check_password(password: &str) -> Result<(), String> {
    let length = password.chars().count();
    if length < MIN_PASSWORD {
        return Err(format!(
            "password must be at least {MIN_PASSWORD} characters"
        ));
    }
    if password.len() > MAX_PASSWORD {
        return Err(format!("password must be at most {MAX_PASSWORD} bytes"));
    }
    Ok(())
}

pub fn check_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("name must not be empty".into());
    }
    if name.chars().count() > 200 {
        return Err("name is longer than 200 characters".into());
    }
    if name.chars().any(char::is_control) {
        return Err("name must not contain control characters".into());
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(normalise_email("  Ann@Example.COM "), "ann@example.com");
        assert_eq!(
            normalise_email("Ren\u{0065}\u{0301}@example.com"),
            normalise_email("Ren\u{00E9}@example.com"),
            "a decomposed é is the composed one"
        );
        assert!(check_email("ann@example.com").is_ok());
        assert!(check_email("a.b+tag@mail.example.co.uk").is_ok());
        for bad in [
            "",
            "ann",
            "@example.com",
            "ann@",
            "ann@example",
            "ann@@example.com",
            "a nn@example.com",
            "ann@example..com",
            "a\u{0}nn@example.com",
            "ann\u{200B}@example.com",
            "ann@exam\u{FEFF}ple.com",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords() {
        assert!(check_password("12345678").is_ok());
        assert!(check_password("1234567").is_err());
        assert!(check_password("héhéhéhé").is_ok(), "characters, not bytes");
        assert!(check_password(&"x".repeat(MAX_PASSWORD + 1)).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(check_name("  Ann  "), Ok("Ann".into()));
        assert!(check_name("   ").is_err());
        assert!(check_name("An\u{0}n").is_err());
        assert!(check_name("Zoë Ann-Marie").is_ok());
    }
}
