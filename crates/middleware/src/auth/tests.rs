//! Every way a token can be wrong, and the layer around a real router.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::header::CONTENT_TYPE;
use tower::ServiceExt;

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

const ED_PRIVATE_A: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIEIVyG6nLeeFkn5Z3boKGcgxcTBXqyD/TEPWmjm7tdSQ
-----END PRIVATE KEY-----
";
const ED_PUBLIC_A: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAOxykiEpi4C2N157spZ9FuvfU3GOXH2cK+VTzlUhz+9Q=
-----END PUBLIC KEY-----
";
const ED_PRIVATE_B: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIDFrkN2LPeeq4tWPxA4Vmgna0a5a2M4Fpg+PsxX+hKkh
-----END PRIVATE KEY-----
";
const ED_PUBLIC_B: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA1/XQObrrqixxoUQJmA2pe/qjM17pphVrN5+97YeWbEQ=
-----END PUBLIC KEY-----
";
const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCaqCU9MOsoe8j6
3LdZI8TvcHijLByk+ZQKsw/xti94FqEUqblEtsIKrEaVm2Vj6mI+H/xVy5s0ek0H
dB83JZ9RH+tXyA8NM4MYlmneQuRttVzEwYw7kjJRCniQSg0Z87WiM8sxZnLntzUm
zBSMQUmTmIST+ofJiqN0PAvKTWjYwlg7T1Xe2zjYgdUpT+f6keQ9EkpmMSDf8PNw
4GZan6nxkB6UEm6Pqp3FVFUttEdPfIrBL/mzclAAvX3TiB2x6oYBBPKl6JRtNZ90
FJOx4fE9GqPMvzcOpzTxtyo3c4OTPx8FEZ+FtWlGNvoEWOS4/EaAr3x9cKuJLtRB
JMUroyCBAgMBAAECggEAGO3P7DBK74BzJyYAXdt7U+HMEvfkzsjguTrKGqWfEDCM
RXGNiLXGywP1mrRCNcai5a2v4Gp3OZBvLdY6GTW0xlWqpesnAJ3ph0M+NxKO5zTh
NQvtB/CAW3ogcJhRyqRIhlKVRwC4YSuxuG++mNRbQPHIM7bMlXWF9GdLZTrGEuOR
5KqlNxEsh0Ad2NI9dauo95pq/iq8HGIkbkW+XpYW9k3hq4d9Uw/jBmBdzE09qbBq
m1UUIyzwUTt6hIeayAArTjP73V0BksOdLvkBf90iZ9fzZ0fkxZX0VDx+XubLYiRS
lGyCg2xk8VoyK5+PiJxxtXlKEcctWknM2xTnncDbQwKBgQDNSyhllpIpjY/JyU3B
QJSE/JxB5kCF+jFY0IMG25no71Rrak56kY1azk5XkPilXZfFzbARbxPWgm7HeY77
rxhvW3m1zLpnx1ueKeggSX6dXTC2ChOEiGvnCJD2z2cWdIEOuprEseNfHrmId/z9
4+Vqkd/WiHbLSq7u5FmPeweDawKBgQDA2zFwTKd3tIYbAdm/PCVJGp1uQ0YGoh1F
f/Kye/x2lO1bcZDZEVzgdPntGdzBvLDZhgYV6LMP7n1oksxOI02RSb5zJLpQod1Z
vYmKejA6gbJpXtyAqw6n7ANZqnHWSqHziB3SbIwMUTNnvPASAzXg4/+6C4P0vAi+
aOd/aKWSwwKBgQCK1bYnJbIJOfww6duUwvjuCuwdwPqH4NC4kKLb421t01UTI5yZ
VY/0BiuDGr6dDvOSSO02jRksa59BdZrV6O8sd/+SjDbP8kmqaArcsvdWsuw7YAsd
CSl34BoxX8gGrpmM/XOna+oprNyqRwMoLJQ9AxQOwNEd4I73biSHXRuSqwKBgFny
YV6FAd5cvec+t7XvcVxlI2PX0IMrfQd7I1CHbzpHP2TU1L/Iz06IgEBLPaDGRp1N
Wu1A+LLHgooRXWRcJsNKZ58AVD1jIP/H3KxPTMsczn9ClQkVvuImu3FIg4t0h5Az
veT0Z2UfQiByCG3+PVTEQfMdh8/PGyzjdIUB46dNAoGAHTfyHV/tQLgKV5Q95e7q
Rj7ioCMx23dwxuPsniyJlVIUQ/mwm6IMKXrVW95JJWTZaFM0Tmb8GY44+ceivfiA
+v/KGA29gejc3aBP1b1BoV1tzpMDaMFd0hEackib1cFe/5142mADNWBcWKmHqa5Z
j7xBzun4spkx9iNL3jiUPcU=
-----END PRIVATE KEY-----
";
const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAmqglPTDrKHvI+ty3WSPE
73B4oywcpPmUCrMP8bYveBahFKm5RLbCCqxGlZtlY+piPh/8VcubNHpNB3QfNyWf
UR/rV8gPDTODGJZp3kLkbbVcxMGMO5IyUQp4kEoNGfO1ojPLMWZy57c1JswUjEFJ
k5iEk/qHyYqjdDwLyk1o2MJYO09V3ts42IHVKU/n+pHkPRJKZjEg3/DzcOBmWp+p
8ZAelBJuj6qdxVRVLbRHT3yKwS/5s3JQAL1904gdseqGAQTypeiUbTWfdBSTseHx
PRqjzL83Dqc08bcqN3ODkz8fBRGfhbVpRjb6BFjkuPxGgK98fXCriS7UQSTFK6Mg
gQIDAQAB
-----END PUBLIC KEY-----
";

fn hs_keys() -> JwtKeys {
    JwtKeys::new(&JwtSettings::hs256(SECRET)).expect("HS256 keys")
}

fn pem_settings(algorithm: JwtAlgorithm, private: Option<&str>, public: &str) -> JwtSettings {
    JwtSettings {
        algorithm,
        secret: None,
        private_key_pem: private.map(|pem| pem.as_bytes().to_vec()),
        public_key_pem: Some(public.as_bytes().to_vec()),
        ..JwtSettings::hs256("unused")
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn valid_claims() -> Claims {
    let now = now();
    Claims {
        sub: "user-1".into(),
        email: "ann@example.com".into(),
        iss: DEFAULT_ISSUER.into(),
        aud: DEFAULT_AUDIENCE.into(),
        iat: now,
        nbf: now,
        exp: now + 600,
    }
}

fn sign(algorithm: Algorithm, claims: &impl Serialize, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).expect("encode")
}

fn sign_hs256(claims: &impl Serialize) -> String {
    sign(
        Algorithm::HS256,
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

/// base64url without padding, to craft tokens jsonwebtoken refuses to make.
fn b64url(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b0 = u32::from(chunk[0]);
        let b1 = u32::from(chunk.get(1).copied().unwrap_or(0));
        let b2 = u32::from(chunk.get(2).copied().unwrap_or(0));
        let n = (b0 << 16) | (b1 << 8) | b2;
        for i in 0..=chunk.len() {
            let index = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

#[test]
fn b64_helpers_agree() {
    let inputs: [&[u8]; 6] = [
        b"",
        b"a",
        b"ab",
        b"abc",
        b"{\"alg\":\"none\"}",
        &[0xff, 0x00, 0xfe],
    ];
    for input in inputs {
        assert_eq!(base64url_decode(&b64url(input)).as_deref(), Some(input));
    }
    assert_eq!(base64url_decode("a+b"), None);
}

#[test]
fn issue_and_verify_round_trip() {
    let keys = hs_keys();
    let issued = keys.issue("user-1", "ann@example.com").expect("issue");
    assert_eq!(issued.expires_in, 3600);
    let claims = keys.verify(&issued.token).expect("verify");
    assert_eq!(claims.sub, "user-1");
    assert_eq!(claims.email, "ann@example.com");
    assert_eq!(claims.iss, "shopmesh");
    assert_eq!(claims.aud, "shopmesh");
    assert_eq!(claims.exp - claims.iat, 3600);
    assert_eq!(claims.nbf, claims.iat);
    assert!((claims.iat - now()).abs() <= 5);
    let header = jsonwebtoken::decode_header(&issued.token).expect("header");
    assert_eq!(header.alg, Algorithm::HS256);
    assert!(!format!("{issued:?}").contains(&issued.token));
}

#[test]
fn ttl_comes_from_settings() {
    let settings = JwtSettings {
        ttl: Duration::from_secs(90),
        ..JwtSettings::hs256(SECRET)
    };
    let keys = JwtKeys::new(&settings).expect("keys");
    let issued = keys.issue("u", "u@example.com").expect("issue");
    assert_eq!(issued.expires_in, 90);
    let claims = keys.verify(&issued.token).expect("verify");
    assert_eq!(claims.exp - claims.iat, 90);
}

#[test]
fn expired_tokens_are_rejected() {
    let claims = Claims {
        iat: now() - 3600,
        nbf: now() - 3600,
        exp: now() - 60,
        ..valid_claims()
    };
    assert_eq!(
        hs_keys().verify(&sign_hs256(&claims)),
        Err(AuthError::Expired)
    );
}

#[test]
fn a_remembered_token_still_expires() {
    let keys = JwtKeys::new(&JwtSettings {
        ttl: std::time::Duration::from_secs(1),
        ..JwtSettings::hs256(SECRET)
    })
    .expect("keys");
    let token = keys.issue("user-1", "a@example.com").expect("token").token;
    assert!(keys.verify(&token).is_ok());
    assert!(
        keys.verify(&token).is_ok(),
        "served from the verified-token cache"
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(keys.verify(&token), Err(AuthError::Expired));
}

#[test]
fn a_tampered_copy_of_a_remembered_token_is_still_checked() {
    let keys = hs_keys();
    let token = keys.issue("user-1", "a@example.com").expect("token").token;
    assert!(keys.verify(&token).is_ok());
    let mut tampered = token.clone();
    tampered.push('x');
    assert!(keys.verify(&tampered).is_err());
}

#[test]
fn leeway_tolerates_small_clock_skew() {
    let claims = Claims {
        exp: now() - 30,
        ..valid_claims()
    };
    let token = sign_hs256(&claims);
    let lenient = JwtKeys::new(&JwtSettings {
        leeway_seconds: 120,
        ..JwtSettings::hs256(SECRET)
    })
    .expect("keys");
    assert!(lenient.verify(&token).is_ok());
    assert_eq!(hs_keys().verify(&token), Err(AuthError::Expired));
}

#[test]
fn tokens_not_valid_yet_are_rejected() {
    let claims = Claims {
        nbf: now() + 3600,
        exp: now() + 7200,
        ..valid_claims()
    };
    assert_eq!(
        hs_keys().verify(&sign_hs256(&claims)),
        Err(AuthError::NotYetValid)
    );
}

#[test]
fn wrong_issuer_and_audience_are_rejected() {
    let keys = hs_keys();
    let claims = Claims {
        iss: "someone-else".into(),
        ..valid_claims()
    };
    assert_eq!(
        keys.verify(&sign_hs256(&claims)),
        Err(AuthError::WrongIssuer)
    );
    let claims = Claims {
        aud: "another-app".into(),
        ..valid_claims()
    };
    assert_eq!(
        keys.verify(&sign_hs256(&claims)),
        Err(AuthError::WrongAudience)
    );
}

#[test]
fn claims_missing_from_the_token_are_rejected() {
    let now = now();
    let without_nbf = serde_json::json!({
        "sub": "user-1", "email": "a@example.com", "iss": "shopmesh", "aud": "shopmesh",
        "iat": now, "exp": now + 600,
    });
    let error = hs_keys()
        .verify(&sign_hs256(&without_nbf))
        .expect_err("nbf is required");
    assert_eq!(error, AuthError::Malformed);
    let without_email = serde_json::json!({
        "sub": "user-1", "iss": "shopmesh", "aud": "shopmesh",
        "iat": now, "nbf": now, "exp": now + 600,
    });
    assert!(hs_keys().verify(&sign_hs256(&without_email)).is_err());
}

#[test]
fn other_algorithms_with_the_same_secret_are_rejected() {
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    for algorithm in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign(algorithm, &valid_claims(), &key);
        assert_eq!(hs_keys().verify(&token), Err(AuthError::WrongAlgorithm));
    }
}

#[test]
fn alg_none_is_rejected() {
    let payload = b64url(&serde_json::to_vec(&valid_claims()).expect("json"));
    for alg in ["none", "None", "NONE"] {
        let header = b64url(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        for signature in ["", "c2ln"] {
            let token = format!("{header}.{payload}.{signature}");
            assert_eq!(
                hs_keys().verify(&token),
                Err(AuthError::WrongAlgorithm),
                "{token}"
            );
        }
    }
}

#[test]
fn tampered_tokens_are_rejected() {
    let keys = hs_keys();
    let other_secret = EncodingKey::from_secret(b"another-secret-that-is-long-enough!!");
    let forged = sign(Algorithm::HS256, &valid_claims(), &other_secret);
    assert_eq!(keys.verify(&forged), Err(AuthError::BadSignature));

    let token = keys
        .issue("user-1", "ann@example.com")
        .expect("issue")
        .token;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let elevated = Claims {
        sub: "admin".into(),
        ..keys.verify(&token).expect("valid")
    };
    let payload = b64url(&serde_json::to_vec(&elevated).expect("json"));
    let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    assert_eq!(keys.verify(&tampered), Err(AuthError::BadSignature));
}

#[test]
fn garbage_is_malformed() {
    let keys = hs_keys();
    let too_long = "a".repeat(MAX_TOKEN_LEN + 1);
    for garbage in [
        "",
        "garbage",
        "not a token at all",
        "a.b",
        "a.b.c.d",
        "....",
        "eyJ.eyJ.sig",
        too_long.as_str(),
    ] {
        assert_eq!(
            keys.verify(garbage),
            Err(AuthError::Malformed),
            "{garbage:?}"
        );
    }
}

#[test]
fn short_or_missing_secrets_are_refused() {
    let short = JwtKeys::new(&JwtSettings::hs256("too-short")).expect_err("short");
    assert!(matches!(short, AuthError::Keys(_)));
    let missing = JwtSettings {
        secret: None,
        ..JwtSettings::hs256(SECRET)
    };
    assert!(matches!(JwtKeys::new(&missing), Err(AuthError::Keys(_))));
    assert!(!format!("{:?}", JwtSettings::hs256(SECRET)).contains(SECRET));
}

#[test]
fn eddsa_issues_and_verifies() {
    let issuer = JwtKeys::new(&pem_settings(
        JwtAlgorithm::EdDsa,
        Some(ED_PRIVATE_A),
        ED_PUBLIC_A,
    ))
    .expect("EdDSA keys");
    let verifier =
        JwtKeys::new(&pem_settings(JwtAlgorithm::EdDsa, None, ED_PUBLIC_A)).expect("verifier");
    assert!(issuer.can_issue());
    assert!(!verifier.can_issue());

    let issued = issuer.issue("user-2", "bob@example.com").expect("issue");
    let header = jsonwebtoken::decode_header(&issued.token).expect("header");
    assert_eq!(header.alg, Algorithm::EdDSA);
    let claims = verifier.verify(&issued.token).expect("verify");
    assert_eq!(claims.sub, "user-2");
    assert_eq!(claims.email, "bob@example.com");

    assert!(matches!(
        verifier.issue("user-2", "bob@example.com"),
        Err(AuthError::Keys(_))
    ));
}

#[test]
fn eddsa_rejects_other_keys_and_algorithms() {
    let verifier =
        JwtKeys::new(&pem_settings(JwtAlgorithm::EdDsa, None, ED_PUBLIC_A)).expect("verifier");

    let other_pair = JwtKeys::new(&pem_settings(
        JwtAlgorithm::EdDsa,
        Some(ED_PRIVATE_B),
        ED_PUBLIC_B,
    ))
    .expect("pair B");
    let token = other_pair
        .issue("user-2", "bob@example.com")
        .expect("issue")
        .token;
    assert_eq!(verifier.verify(&token), Err(AuthError::BadSignature));

    let hs = sign_hs256(&valid_claims());
    assert_eq!(verifier.verify(&hs), Err(AuthError::WrongAlgorithm));

    // Algorithm confusion: HMAC "signed" with the public key an attacker can read.
    let confused = sign(
        Algorithm::HS256,
        &valid_claims(),
        &EncodingKey::from_secret(ED_PUBLIC_A.as_bytes()),
    );
    assert_eq!(verifier.verify(&confused), Err(AuthError::WrongAlgorithm));

    // And an HS256 verifier does not take EdDSA tokens.
    assert_eq!(hs_keys().verify(&token), Err(AuthError::WrongAlgorithm));
}

#[test]
fn mismatched_key_pairs_fail_at_startup() {
    let mismatched = pem_settings(JwtAlgorithm::EdDsa, Some(ED_PRIVATE_A), ED_PUBLIC_B);
    assert!(matches!(JwtKeys::new(&mismatched), Err(AuthError::Keys(_))));

    let swapped = pem_settings(JwtAlgorithm::EdDsa, Some(ED_PRIVATE_A), ED_PRIVATE_A);
    assert!(matches!(JwtKeys::new(&swapped), Err(AuthError::Keys(_))));

    let wrong_kind = pem_settings(JwtAlgorithm::Rs256, None, ED_PUBLIC_A);
    assert!(matches!(JwtKeys::new(&wrong_kind), Err(AuthError::Keys(_))));

    let garbage = pem_settings(JwtAlgorithm::EdDsa, None, "not a pem");
    assert!(matches!(JwtKeys::new(&garbage), Err(AuthError::Keys(_))));
}

#[test]
fn rs256_issues_verifies_and_resists_algorithm_confusion() {
    let issuer = JwtKeys::new(&pem_settings(
        JwtAlgorithm::Rs256,
        Some(RSA_PRIVATE),
        RSA_PUBLIC,
    ))
    .expect("RS256 keys");
    let verifier =
        JwtKeys::new(&pem_settings(JwtAlgorithm::Rs256, None, RSA_PUBLIC)).expect("verifier");
    let issued = issuer.issue("user-3", "cy@example.com").expect("issue");
    assert_eq!(
        jsonwebtoken::decode_header(&issued.token)
            .expect("header")
            .alg,
        Algorithm::RS256
    );
    assert_eq!(
        verifier.verify(&issued.token).expect("verify").sub,
        "user-3"
    );

    let confused = sign(
        Algorithm::HS256,
        &valid_claims(),
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
    );
    assert_eq!(verifier.verify(&confused), Err(AuthError::WrongAlgorithm));
}

#[test]
fn algorithm_names_parse_case_insensitively() {
    assert_eq!("HS256".parse::<JwtAlgorithm>(), Ok(JwtAlgorithm::Hs256));
    assert_eq!("hs256".parse::<JwtAlgorithm>(), Ok(JwtAlgorithm::Hs256));
    assert_eq!("EdDSA".parse::<JwtAlgorithm>(), Ok(JwtAlgorithm::EdDsa));
    assert_eq!("EDDSA".parse::<JwtAlgorithm>(), Ok(JwtAlgorithm::EdDsa));
    assert_eq!("rs256".parse::<JwtAlgorithm>(), Ok(JwtAlgorithm::Rs256));
    assert!("none".parse::<JwtAlgorithm>().is_err());
    assert!("HS512".parse::<JwtAlgorithm>().is_err());
    assert_eq!(JwtAlgorithm::EdDsa.to_string(), "EdDSA");
}

#[test]
fn bearer_tokens_are_extracted() {
    let mut headers = HeaderMap::new();
    assert_eq!(bearer_token(&headers), Err(AuthError::MissingToken));
    for (value, expected) in [
        ("Bearer abc.def.ghi", Ok("abc.def.ghi")),
        ("bearer abc", Ok("abc")),
        ("BEARER abc", Ok("abc")),
        ("Bearer   abc  ", Ok("abc")),
        ("Bearer ", Err(AuthError::MissingToken)),
        ("Bearer", Err(AuthError::MissingToken)),
        ("Basic dXNlcjpwYXNz", Err(AuthError::MissingToken)),
        ("Bearerabc", Err(AuthError::MissingToken)),
    ] {
        headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
        assert_eq!(bearer_token(&headers), expected, "{value:?}");
    }
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_bytes(b"Bearer \xff\xfe").expect("obs-text is a valid value"),
    );
    assert_eq!(bearer_token(&headers), Err(AuthError::Malformed));
}

async fn json_body(response: Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    serde_json::from_slice(&bytes).expect("json body")
}

#[tokio::test]
async fn errors_answer_with_the_contract_body() {
    let response = AuthError::Expired.into_response();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    assert_eq!(
        response.headers()[WWW_AUTHENTICATE],
        "Bearer error=\"invalid_token\""
    );
    let body = json_body(response).await;
    assert_eq!(body["error"]["code"], "token_expired");
    assert_eq!(body["error"]["message"], "token has expired");

    let response = AuthError::MissingToken.into_response();
    assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
    assert_eq!(json_body(response).await["error"]["code"], "missing_token");

    for error in [
        AuthError::Malformed,
        AuthError::NotYetValid,
        AuthError::BadSignature,
        AuthError::WrongAlgorithm,
        AuthError::WrongIssuer,
        AuthError::WrongAudience,
        AuthError::Invalid("x".into()),
    ] {
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(error.code(), "invalid_token");
    }

    let response = AuthError::Keys("cannot parse /etc/jwt/private.pem".into()).into_response();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(response.headers().get(WWW_AUTHENTICATE).is_none());
    let body = json_body(response).await;
    assert_eq!(body["error"]["code"], "internal");
    assert!(!body.to_string().contains("private.pem"), "{body}");
}

/// Runs `request` through the layer over an inner service that echoes the claims' email.
async fn through_layer(keys: JwtKeys, request: Request<Bytes>) -> (http::Response<Bytes>, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let inner = tower::service_fn(move |request: Request<Bytes>| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let email = request
                .extensions()
                .get::<Claims>()
                .map(|claims| claims.email.clone())
                .unwrap_or_default();
            Ok::<_, Infallible>(http::Response::new(Bytes::from(email)))
        }
    });
    let service = RequireAuthLayer::new(keys).layer(inner);
    let response = service.oneshot(request).await.expect("infallible");
    (response, calls.load(Ordering::SeqCst))
}

fn request_with(authorization: Option<&str>) -> Request<Bytes> {
    let mut builder = Request::builder().uri("/profile");
    if let Some(value) = authorization {
        builder = builder.header(AUTHORIZATION, value);
    }
    builder.body(Bytes::new()).expect("request")
}

#[tokio::test]
async fn layer_rejects_requests_without_a_token() {
    let (response, calls) = through_layer(hs_keys(), request_with(None)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(calls, 0, "inner service must not be called");
    assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    let body: serde_json::Value = serde_json::from_slice(response.body()).expect("json");
    assert_eq!(body["error"]["code"], "missing_token");
}

#[tokio::test]
async fn layer_passes_valid_tokens_with_their_claims() {
    let keys = hs_keys();
    let token = keys
        .issue("user-1", "ann@example.com")
        .expect("issue")
        .token;
    let (response, calls) =
        through_layer(keys, request_with(Some(format!("Bearer {token}").as_str()))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls, 1);
    assert_eq!(response.body(), &Bytes::from_static(b"ann@example.com"));
}

#[tokio::test]
async fn layer_rejects_bad_tokens_with_their_code() {
    let expired = sign_hs256(&Claims {
        iat: now() - 3600,
        nbf: now() - 3600,
        exp: now() - 60,
        ..valid_claims()
    });
    for (token, code) in [
        (expired.as_str(), "token_expired"),
        ("garbage", "invalid_token"),
    ] {
        let (response, calls) = through_layer(
            hs_keys(),
            request_with(Some(format!("Bearer {token}").as_str())),
        )
        .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(calls, 0);
        assert!(response.headers().contains_key(WWW_AUTHENTICATE));
        let body: serde_json::Value = serde_json::from_slice(response.body()).expect("json");
        assert_eq!(body["error"]["code"], code);
    }
}

async fn whoami(claims: Claims) -> String {
    claims.email
}

#[tokio::test]
async fn axum_handlers_take_claims_from_the_layer() {
    let keys = hs_keys();
    let token = keys
        .issue("user-1", "ann@example.com")
        .expect("issue")
        .token;
    let guarded = axum::Router::new()
        .route("/me", axum::routing::get(whoami))
        .layer(RequireAuthLayer::new(keys));
    let request = Request::builder()
        .uri("/me")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .expect("request");
    let response = guarded.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    assert_eq!(body, Bytes::from_static(b"ann@example.com"));

    let anonymous = Request::builder()
        .uri("/me")
        .body(axum::body::Body::empty())
        .expect("request");
    let response = guarded.oneshot(anonymous).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Without the layer the extractor itself refuses.
    let unguarded = axum::Router::new().route("/me", axum::routing::get(whoami));
    let request = Request::builder()
        .uri("/me")
        .body(axum::body::Body::empty())
        .expect("request");
    let response = unguarded.oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_body(response).await["error"]["code"], "missing_token");
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("shopmesh-auth-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn from_env_defaults_to_hs256_and_requires_a_long_secret() {
    let missing = JwtSettings::from_env(&kit::Env::default()).expect_err("no secret");
    assert_eq!(
        missing,
        ConfigError::Missing {
            name: "JWT_SECRET".into()
        }
    );

    let short = JwtSettings::from_env(&kit::Env::from_pairs([("JWT_SECRET", "hunter2-hunter2")]))
        .expect_err("short secret");
    assert_eq!(short.variable(), "JWT_SECRET");
    assert!(!short.to_string().contains("hunter2"), "{short}");

    let settings =
        JwtSettings::from_env(&kit::Env::from_pairs([("JWT_SECRET", SECRET)])).expect("valid");
    assert_eq!(settings.algorithm, JwtAlgorithm::Hs256);
    assert_eq!(settings.secret.as_deref(), Some(SECRET));
    assert_eq!(settings.issuer, "shopmesh");
    assert_eq!(settings.audience, "shopmesh");
    assert_eq!(settings.ttl, Duration::from_secs(3600));
    assert_eq!(settings.leeway_seconds, 0);
    JwtKeys::new(&settings).expect("usable");
}

#[test]
fn from_env_reads_explicit_values() {
    let env = kit::Env::from_pairs([
        ("JWT_ALGORITHM", "hs256"),
        ("JWT_SECRET", SECRET),
        ("JWT_ISSUER", "user-service"),
        ("JWT_AUDIENCE", "gateway"),
        ("JWT_TTL", "15m"),
    ]);
    let settings = JwtSettings::from_env(&env).expect("valid");
    assert_eq!(settings.issuer, "user-service");
    assert_eq!(settings.audience, "gateway");
    assert_eq!(settings.ttl, Duration::from_secs(900));

    for (name, value) in [
        ("JWT_ALGORITHM", "HS512"),
        ("JWT_TTL", "soon"),
        ("JWT_TTL", "0s"),
    ] {
        let env = kit::Env::from_pairs([("JWT_SECRET", SECRET), (name, value)]);
        let error = JwtSettings::from_env(&env).expect_err(value);
        assert_eq!(error.variable(), name, "{error}");
    }
}

#[test]
fn from_env_loads_pem_files() {
    let dir = TempDir::new();
    let private = dir.write("ed.pem", ED_PRIVATE_A);
    let public = dir.write("ed.pub.pem", ED_PUBLIC_A);

    let env = kit::Env::from_pairs([
        ("JWT_ALGORITHM", "EdDSA"),
        ("JWT_PRIVATE_KEY_FILE", private.as_str()),
        ("JWT_PUBLIC_KEY_FILE", public.as_str()),
    ]);
    let settings = JwtSettings::from_env(&env).expect("valid");
    assert_eq!(settings.algorithm, JwtAlgorithm::EdDsa);
    assert!(settings.secret.is_none());
    let keys = JwtKeys::new(&settings).expect("keys");
    let token = keys.issue("u", "u@example.com").expect("issue").token;

    let verifier_env = kit::Env::from_pairs([
        ("JWT_ALGORITHM", "eddsa"),
        ("JWT_PUBLIC_KEY_FILE", public.as_str()),
    ]);
    let verifier_settings = JwtSettings::from_env(&verifier_env).expect("verifier");
    assert!(verifier_settings.private_key_pem.is_none());
    let verifier = JwtKeys::new(&verifier_settings).expect("verifier keys");
    assert_eq!(verifier.verify(&token).expect("verify").sub, "u");
}

#[test]
fn from_env_names_the_bad_key_variable() {
    let dir = TempDir::new();
    let public = dir.write("ed.pub.pem", ED_PUBLIC_A);
    let private = dir.write("ed.pem", ED_PRIVATE_A);
    let not_pem = dir.write("junk.pem", "junk");
    let nowhere = dir.0.join("missing.pem").to_string_lossy().into_owned();

    let missing = JwtSettings::from_env(&kit::Env::from_pairs([("JWT_ALGORITHM", "EdDSA")]))
        .expect_err("no key");
    assert_eq!(missing.variable(), "JWT_PUBLIC_KEY_FILE");

    for (public_file, private_file, variable) in [
        (nowhere.as_str(), None, "JWT_PUBLIC_KEY_FILE"),
        (not_pem.as_str(), None, "JWT_PUBLIC_KEY_FILE"),
        (private.as_str(), None, "JWT_PUBLIC_KEY_FILE"),
        (
            public.as_str(),
            Some(nowhere.as_str()),
            "JWT_PRIVATE_KEY_FILE",
        ),
        (
            public.as_str(),
            Some(not_pem.as_str()),
            "JWT_PRIVATE_KEY_FILE",
        ),
    ] {
        let mut pairs = vec![
            ("JWT_ALGORITHM", "EdDSA"),
            ("JWT_PUBLIC_KEY_FILE", public_file),
        ];
        if let Some(path) = private_file {
            pairs.push(("JWT_PRIVATE_KEY_FILE", path));
        }
        let error = JwtSettings::from_env(&kit::Env::from_pairs(pairs)).expect_err(variable);
        assert_eq!(error.variable(), variable, "{error}");
    }
}
