//! Password hashing: argon2id at the OWASP parameters (m = 19456 KiB, t = 2, p = 1), stored
//! as PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
//!
//! Hashing costs tens of milliseconds of CPU on purpose, so it runs on tokio's blocking pool:
//! a burst of logins must not stall the async worker threads. Verification uses the
//! parameters stored in the PHC string, so hashes made with older (cheaper) settings still
//! verify.
//!
//! bcrypt hashes (`$2a$`, `$2b$`, `$2y$`), as the Go workshop's user-service stored them,
//! verify too, so accounts carried over from it can log in; [`needs_rehash`] tells the
//! caller to replace such a hash (or an argon2 one made with other parameters) with a
//! fresh one once the password is known to be right.

use std::sync::OnceLock;

use argon2::password_hash::{self, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Memory cost in KiB (OWASP: 19 MiB).
pub const M_COST_KIB: u32 = 19_456;
/// Iterations.
pub const T_COST: u32 = 2;
/// Parallelism.
pub const P_COST: u32 = 1;
/// Salt length in bytes (the argon2 crate's recommendation).
const SALT_LEN: usize = 16;
/// bcrypt reads at most this many bytes of a password (Go's bcrypt refuses longer ones).
const BCRYPT_MAX_PASSWORD: usize = 72;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("could not hash the password: {0}")]
    Hash(String),
    #[error("the stored password hash is malformed: {0}")]
    Malformed(String),
    #[error("the password hashing task did not complete")]
    Join,
}

/// Hashes `password` with a fresh random salt; returns the PHC string.
pub async fn hash_password(password: String) -> Result<String, PasswordError> {
    tokio::task::spawn_blocking(move || hash_blocking(password.as_bytes()))
        .await
        .map_err(|_| PasswordError::Join)?
}

/// `Ok(true)` if `password` matches the PHC string `phc`, `Ok(false)` if it does not, and an
/// error if `phc` is not a usable argon2 PHC string.
pub async fn verify_password(password: String, phc: String) -> Result<bool, PasswordError> {
    tokio::task::spawn_blocking(move || verify_blocking(password.as_bytes(), &phc))
        .await
        .map_err(|_| PasswordError::Join)?
}

/// Does the work of a password check against a fixed hash and throws the answer away.
///
/// For logins with an unknown email, so they take as long as a wrong password and the
/// timing does not reveal which emails have accounts.
pub async fn verify_against_dummy(password: String) {
    let outcome = tokio::task::spawn_blocking(move || {
        if let Some(phc) = dummy_hash() {
            // The answer is meaningless; only the time spent matters.
            let _ = verify_blocking(password.as_bytes(), phc);
        }
    })
    .await;
    if outcome.is_err() {
        tracing::warn!("the dummy password check did not complete");
    }
}

/// Computes the dummy hash now, at start-up, so the first login with an unknown email does
/// not pay for it (and take longer than a wrong password would).
pub async fn prepare_dummy_hash() {
    if tokio::task::spawn_blocking(dummy_hash).await.is_err() {
        tracing::warn!("the dummy password hash was not prepared");
    }
}

/// The hash [`verify_against_dummy`] checks against, computed on first use.
fn dummy_hash() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY
        .get_or_init(|| hash_blocking(b"shopmesh-dummy-password-for-unknown-accounts").ok())
        .as_deref()
}

fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None)
        .map_err(|error| PasswordError::Hash(error.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_blocking(password: &[u8]) -> Result<String, PasswordError> {
    let salt_bytes: [u8; SALT_LEN] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|error| PasswordError::Hash(error.to_string()))?;
    let hash = hasher()?
        .hash_password(password, &salt)
        .map_err(|error| PasswordError::Hash(error.to_string()))?;
    Ok(hash.to_string())
}

/// Whether a stored hash should be replaced by one made now, at the next successful login:
/// a bcrypt hash from the Go workshop, or an argon2 one with other parameters.
pub fn needs_rehash(stored: &str) -> bool {
    !stored.starts_with(&format!(
        "$argon2id$v=19$m={M_COST_KIB},t={T_COST},p={P_COST}$"
    ))
}

fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|prefix| stored.starts_with(prefix))
}

fn verify_bcrypt(password: &[u8], stored: &str) -> Result<bool, PasswordError> {
    let verified = bcrypt::verify(&password[..password.len().min(BCRYPT_MAX_PASSWORD)], stored)
        .map_err(|error| PasswordError::Malformed(error.to_string()))?;
    // Checked after the work, so an over-long password costs the same time as a wrong
    // one: no bcrypt hash was made from it (Go's bcrypt refuses such passwords), and
    // matching its first 72 bytes would let a longer, different one in.
    Ok(verified && password.len() <= BCRYPT_MAX_PASSWORD)
}

fn verify_blocking(password: &[u8], phc: &str) -> Result<bool, PasswordError> {
    if is_bcrypt(phc) {
        return verify_bcrypt(password, phc);
    }
    let parsed =
        PasswordHash::new(phc).map_err(|error| PasswordError::Malformed(error.to_string()))?;
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(PasswordError::Malformed(
            "the PHC string has no salt or no hash".to_owned(),
        ));
    }
    // `Argon2::default()` only supplies the algorithm implementation: the variant, version
    // and costs are taken from the PHC string itself.
    match Argon2::default().verify_password(password, &parsed) {
        Ok(()) => Ok(true),
        Err(password_hash::Error::Password) => Ok(false),
        Err(error) => Err(PasswordError::Malformed(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bcrypt_hashes_from_the_go_service_verify_and_ask_to_be_replaced() {
        // What Go's bcrypt.GenerateFromPassword stores ($2a$), at the lowest cost for speed.
        let stored = bcrypt::hash_with_salt("gopher pass", 4, [7; 16])
            .expect("bcrypt")
            .format_for_version(bcrypt::Version::TwoA);
        assert!(stored.starts_with("$2a$04$"));
        assert!(
            verify_password("gopher pass".into(), stored.clone())
                .await
                .expect("verify")
        );
        assert!(
            !verify_password("gopher pasS".into(), stored.clone())
                .await
                .expect("verify")
        );
        // bcrypt reads 72 bytes: a longer password sharing them must not get in.
        let long = "x".repeat(72);
        let long_hash = bcrypt::hash(&long, 4).expect("bcrypt");
        assert!(
            verify_password(long.clone(), long_hash.clone())
                .await
                .expect("verify")
        );
        assert!(
            !verify_password(format!("{long}y"), long_hash)
                .await
                .expect("verify")
        );
        assert!(needs_rehash(&stored));
        let fresh = hash_password("gopher pass".into()).await.expect("hash");
        assert!(!needs_rehash(&fresh));
        assert!(needs_rehash(
            "$argon2id$v=19$m=4096,t=3,p=1$c2FsdHNhbHQ$aGFzaA"
        ));
        assert!(matches!(
            verify_password("x".into(), "$2b$04$not-a-bcrypt-hash".into()).await,
            Err(PasswordError::Malformed(_))
        ));
    }

    const OWASP_PREFIX: &str = "$argon2id$v=19$m=19456,t=2,p=1$";

    #[tokio::test]
    async fn round_trip_and_wrong_password() {
        let phc = hash_password("correct horse battery staple".into())
            .await
            .expect("hash");
        assert!(
            verify_password("correct horse battery staple".into(), phc.clone())
                .await
                .expect("verify")
        );
        assert!(
            !verify_password("correct horse battery stapler".into(), phc.clone())
                .await
                .expect("verify")
        );
        assert!(!verify_password(String::new(), phc).await.expect("verify"));
    }

    #[tokio::test]
    async fn hashes_use_owasp_parameters_and_a_fresh_salt() {
        let first = hash_password("s3cret-pass".into()).await.expect("hash");
        let second = hash_password("s3cret-pass".into()).await.expect("hash");
        assert!(first.starts_with(OWASP_PREFIX), "{first}");
        assert!(second.starts_with(OWASP_PREFIX), "{second}");
        assert_ne!(first, second, "each hash gets its own salt");
        assert!(
            verify_password("s3cret-pass".into(), second)
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn cheaper_older_hashes_still_verify() {
        let params = Params::new(4096, 1, 1, None).expect("params");
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
        let phc = argon2
            .hash_password(b"legacy-password", &salt)
            .expect("hash")
            .to_string();
        assert!(phc.starts_with("$argon2id$v=19$m=4096,t=1,p=1$"), "{phc}");
        assert!(
            verify_password("legacy-password".into(), phc.clone())
                .await
                .expect("verify")
        );
        assert!(!verify_password("other".into(), phc).await.expect("verify"));
    }

    #[tokio::test]
    async fn malformed_phc_strings_are_errors() {
        for phc in [
            "",
            "not a hash",
            "$argon2id$v=19$m=19456,t=2,p=1$",
            "$argon2id$v=19$m=abc,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaA",
            "$md5$rounds=5$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        ] {
            let outcome = verify_password("password".into(), phc.into()).await;
            assert!(
                matches!(outcome, Err(PasswordError::Malformed(_))),
                "{phc:?} gave {outcome:?}"
            );
        }
    }

    #[tokio::test]
    async fn dummy_verification_completes() {
        verify_against_dummy("whatever".into()).await;
        verify_against_dummy("whatever else".into()).await;
        let phc = dummy_hash().expect("dummy hash");
        assert!(phc.starts_with(OWASP_PREFIX), "{phc}");
    }
}
