//! Input rules for products.

use serde::Deserialize;

use crate::store::ProductFields;

/// Ten billion dollars, in cents: an order's total (at most 50 lines of 1000 units) stays
/// far inside an `i64`.
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000_000;
/// A trillion units: releases added back can never overflow the column.
pub const MAX_STOCK: i64 = 1_000_000_000_000;

/// The body of `POST /products` and `PUT /products/{id}`.
#[derive(Debug, Deserialize)]
pub struct ProductInput {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub price_cents: i64,
    pub stock: i64,
}

impl ProductInput {
    pub fn validate(self) -> Result<ProductFields, String> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err("name must not be empty".into());
        }
        if name.chars().count() > 200 {
            return Err("name is longer than 200 characters".into());
        }
        // As for user names: a NUL would reach Postgres, a newline or a bell would end up
        // in every page and log line that shows the product.
        if name.chars().any(char::is_control) {
            return Err("name must not contain control characters".into());
        }
        if self.description.chars().count() > 5000 {
            return Err("description is longer than 5000 characters".into());
        }
        // A description may run over several lines; nothing else invisible.
        if self
            .description
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(
                "description must not contain control characters other than line breaks and tabs"
                    .into(),
            );
        }
        if !(0..=MAX_PRICE_CENTS).contains(&self.price_cents) {
            return Err(format!(
                "price_cents must be between 0 and {MAX_PRICE_CENTS}"
            ));
        }
        if !(0..=MAX_STOCK).contains(&self.stock) {
            return Err(format!("stock must be between 0 and {MAX_STOCK}"));
        }
        Ok(ProductFields {
            name: name.to_owned(),
            description: self.description,
            price_cents: self.price_cents,
            stock: self.stock,
        })
    }
}

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// `?limit=&offset=`: limit 1..=100 (default 20), offset >= 0 (default 0).
pub fn page(limit: Option<&str>, offset: Option<&str>) -> Result<(i64, i64), String> {
    let parse = |name: &str, raw: Option<&str>, default: i64| match raw {
        None | Some("") => Ok(default),
        Some(raw) => raw
            .parse::<i64>()
            .map_err(|_| format!("{name} must be an integer, not {raw:?}")),
    };
    let limit = parse("limit", limit, DEFAULT_LIMIT)?;
    let offset = parse("offset", offset, 0)?;
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(format!("limit must be between 1 and {MAX_LIMIT}"));
    }
    if offset < 0 {
        return Err("offset must not be negative".into());
    }
    Ok((limit, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, price_cents: i64, stock: i64) -> ProductInput {
        ProductInput {
            name: name.into(),
            description: String::new(),
            price_cents,
            stock,
        }
    }

    #[test]
    fn products() {
        assert_eq!(input("  Mug ", 0, 0).validate().expect("valid").name, "Mug");
        assert!(input("", 1, 1).validate().is_err());
        assert!(input("Mug", -1, 1).validate().is_err());
        assert!(input("Mug", 1, -1).validate().is_err());
        assert!(input("Mug", MAX_PRICE_CENTS, MAX_STOCK).validate().is_ok());
        assert!(input("Mug", MAX_PRICE_CENTS + 1, 1).validate().is_err());
        assert!(input("Mug", i64::MAX, 1).validate().is_err());
        assert!(input("Mug", 1, MAX_STOCK + 1).validate().is_err());
        for name in ["Mu\ng", "Mug\u{7}", "M\0ug", "Mu\u{85}g"] {
            assert!(input(name, 1, 1).validate().is_err(), "{name:?}");
        }
        let described = |description: &str| ProductInput {
            description: description.into(),
            ..input("Mug", 1, 1)
        };
        assert!(described("Two lines,\r\nand a\ttab.").validate().is_ok());
        assert!(described("Ünïcödé ☕ 🫖").validate().is_ok());
        assert!(described("a NUL \0 here").validate().is_err());
        assert!(described("an escape \u{1b}[31m").validate().is_err());
    }

    #[test]
    fn pages() {
        assert_eq!(page(None, None), Ok((20, 0)));
        assert_eq!(page(Some("5"), Some("10")), Ok((5, 10)));
        assert!(page(Some("0"), None).is_err());
        assert!(page(Some("101"), None).is_err());
        assert!(page(Some("x"), None).is_err());
        assert!(page(None, Some("-1")).is_err());
    }
}
