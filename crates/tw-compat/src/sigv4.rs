//! AWS Signature Version 4 verification, for the Kinesis and Firehose APIs (boto3 and every
//! AWS SDK sign each request this way).
//!
//! The server recomputes the signature from the request it received — method, path, query,
//! the headers the client says it signed, and the SHA-256 of the body — with the secret of the
//! access key named in the credential scope, and compares in constant time. A request dated
//! more than 15 minutes away from the server's clock is refused, as AWS does, so a captured
//! request cannot be replayed later.

use axum::http::{HeaderMap, Method};
use ring::{digest, hmac};

/// Largest accepted clock difference between the signer and the server.
const MAX_SKEW_MS: i64 = 15 * 60 * 1000;

/// Why a signature was refused (each message tells the client what to fix).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigV4Error {
    /// No `Authorization` header.
    #[error("missing authentication: this server requires AWS Signature Version 4")]
    Missing,
    /// The header is not an `AWS4-HMAC-SHA256` authorization.
    #[error("malformed AWS4-HMAC-SHA256 authorization header: {0}")]
    Malformed(&'static str),
    /// The access key id is not configured.
    #[error("the access key id {0:?} is not known to this server")]
    UnknownKey(String),
    /// The request date is missing or too far from now.
    #[error("signature expired or request date invalid: {0}")]
    BadDate(String),
    /// The signature does not match (wrong secret, or the request was altered).
    #[error(
        "the request signature we calculated does not match the signature you provided; check your secret access key"
    )]
    Mismatch,
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, SigV4Error> {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256")
        .ok_or(SigV4Error::Malformed(
            "expected the AWS4-HMAC-SHA256 algorithm",
        ))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let credential = credential.ok_or(SigV4Error::Malformed("no Credential"))?;
    let mut scope = credential.split('/');
    let (Some(access_key_id), Some(date), Some(region), Some(service), Some("aws4_request"), None) = (
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
    ) else {
        return Err(SigV4Error::Malformed(
            "Credential must be KEY/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    let signed_headers: Vec<&str> = signed
        .ok_or(SigV4Error::Malformed("no SignedHeaders"))?
        .split(';')
        .collect();
    if !signed_headers.contains(&"host") {
        return Err(SigV4Error::Malformed("the host header must be signed"));
    }
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        signed_headers,
        signature: signature.ok_or(SigV4Error::Malformed("no Signature"))?,
    })
}

/// A verified request's signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The access key id that signed.
    pub access_key_id: String,
    /// The region of the credential scope (used in ARNs we answer).
    pub region: String,
}

/// Verifies the request's signature. `secret_for` returns the secret of an access key id.
pub fn verify(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    now_ms: i64,
    secret_for: impl Fn(&str) -> Option<String>,
) -> Result<Signer, SigV4Error> {
    let header = headers
        .get("authorization")
        .ok_or(SigV4Error::Missing)?
        .to_str()
        .map_err(|_| SigV4Error::Malformed("not ASCII"))?;
    let auth = parse_authorization(header)?;
    let secret = secret_for(auth.access_key_id)
        .ok_or_else(|| SigV4Error::UnknownKey(auth.access_key_id.to_string()))?;
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| SigV4Error::BadDate("no X-Amz-Date header".into()))?;
    let signed_at = chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| {
            SigV4Error::BadDate(format!("X-Amz-Date {amz_date:?} is not YYYYMMDDTHHMMSSZ"))
        })?
        .and_utc()
        .timestamp_millis();
    if (now_ms - signed_at).abs() > MAX_SKEW_MS {
        return Err(SigV4Error::BadDate(format!(
            "X-Amz-Date {amz_date} is more than 15 minutes from the server's time"
        )));
    }
    if !amz_date.starts_with(auth.date) {
        return Err(SigV4Error::BadDate(
            "the credential scope date does not match X-Amz-Date".into(),
        ));
    }
    let payload_hash = hex(digest::digest(&digest::SHA256, body).as_ref());
    if let Some(claimed) = headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        && claimed != "UNSIGNED-PAYLOAD"
        && claimed != payload_hash
    {
        return Err(SigV4Error::Mismatch);
    }
    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        let values: Vec<String> = headers
            .get_all(*name)
            .iter()
            .map(|v| collapse_spaces(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        if values.is_empty() {
            return Err(SigV4Error::Malformed("a signed header is missing"));
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let canonical_request = format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{}\n{payload_hash}",
        if path.is_empty() { "/" } else { path },
        canonical_query(query.unwrap_or_default()),
        auth.signed_headers.join(";"),
    );
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref())
    );
    let expected = hex(signature(&secret, &auth, &string_to_sign).as_ref());
    if !constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        return Err(SigV4Error::Mismatch);
    }
    Ok(Signer {
        access_key_id: auth.access_key_id.to_string(),
        region: auth.region.to_string(),
    })
}

/// The region of a request's credential scope, unverified (for ARNs when auth is off).
pub fn claimed_region(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    parse_authorization(value)
        .ok()
        .map(|a| a.region.to_string())
}

fn signature(secret: &str, auth: &Authorization<'_>, string_to_sign: &str) -> hmac::Tag {
    let sign = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let k_date = sign(format!("AWS4{secret}").as_bytes(), auth.date);
    let k_region = sign(k_date.as_ref(), auth.region);
    let k_service = sign(k_region.as_ref(), auth.service);
    let k_signing = sign(k_service.as_ref(), "aws4_request");
    sign(k_signing.as_ref(), string_to_sign)
}

/// Query parameters sorted by name then value (clients send them already URI-encoded).
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    pairs.sort_unstable();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares secrets without leaking where they differ through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The "get-vanilla" example of AWS's Signature Version 4 test suite.
    #[test]
    fn verifies_the_aws_test_suite_example() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
                .parse()
                .unwrap(),
        );
        let now = chrono::DateTime::parse_from_rfc3339("2015-08-30T12:40:00Z")
            .unwrap()
            .timestamp_millis();
        let secret = |id: &str| {
            (id == "AKIDEXAMPLE").then(|| "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_string())
        };
        let signer = verify(&Method::GET, "/", None, &headers, b"", now, secret).unwrap();
        assert_eq!(signer.region, "us-east-1");
        let wrong = |_: &str| Some("not-the-secret".to_string());
        assert_eq!(
            verify(&Method::GET, "/", None, &headers, b"", now, wrong),
            Err(SigV4Error::Mismatch)
        );
        assert_eq!(
            verify(&Method::POST, "/", None, &headers, b"", now, secret),
            Err(SigV4Error::Mismatch),
            "a different method changes the signature"
        );
        assert!(matches!(
            verify(
                &Method::GET,
                "/",
                None,
                &headers,
                b"",
                now + 3_600_000,
                secret
            ),
            Err(SigV4Error::BadDate(_))
        ));
        assert!(matches!(
            verify(&Method::GET, "/", None, &headers, b"", now, |_: &str| None),
            Err(SigV4Error::UnknownKey(_))
        ));
        assert_eq!(
            verify(&Method::GET, "/", None, &HeaderMap::new(), b"", now, secret),
            Err(SigV4Error::Missing)
        );
    }
}
