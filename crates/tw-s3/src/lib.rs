//! S3 connection settings shared by everything in Tidewatch that talks to S3 or an
//! S3-compatible server (MinIO, Ceph, moto…): the S3 source (`tw-sources`) and the S3 lake
//! (`tw-lake`). One struct, one validation, one `object_store` builder, so both read the same
//! keys and the same `AWS_*` environment variables the same way.
//!
//! Precedence: the `AWS_*` environment variables `object_store` reads (`AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ENDPOINT`, …, then
//! instance/container credentials) < the settings given here.

use object_store::aws::AmazonS3Builder;
use serde::Deserialize;

/// How to reach S3: endpoint, region, credentials, addressing style. Every field is optional.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Connection {
    /// AWS region (default: `AWS_REGION` / `AWS_DEFAULT_REGION`, else us-east-1).
    pub region: Option<String>,
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Access key (default: `AWS_ACCESS_KEY_ID`, then the instance/container credentials).
    pub access_key_id: Option<String>,
    /// Secret key (default: `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// Allow a plain `http://` endpoint (local S3-compatible servers).
    #[serde(default)]
    pub allow_http: bool,
    /// Address the bucket as `bucket.endpoint` rather than `endpoint/bucket` (path style,
    /// the default, which S3-compatible servers expect).
    #[serde(default)]
    pub virtual_hosted_style: bool,
}

// Secrets stay out of logs and error messages.
impl std::fmt::Debug for S3Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |value: &Option<String>| value.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Connection")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .finish()
    }
}

impl S3Connection {
    /// Every problem of these settings, each a sentence naming the key (empty: valid).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            problems.push("access_key_id and secret_access_key go together".to_string());
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            problems.push(format!(
                "endpoint {endpoint:?} must start with http:// or https://"
            ));
        }
        if matches!(&self.region, Some(region) if region.trim().is_empty()) {
            problems.push("region must not be empty".to_string());
        }
        problems
    }

    /// A builder for `bucket` with the `AWS_*` environment applied first, then these settings.
    /// Callers add what is theirs (an HTTP connector, retries) and build.
    pub fn builder(&self, bucket: &str) -> AmazonS3Builder {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        // Set only when asked, so `AWS_ALLOW_HTTP` / `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` from
        // the environment still apply otherwise.
        if self.allow_http {
            builder = builder.with_allow_http(true);
        }
        if self.virtual_hosted_style {
            builder = builder.with_virtual_hosted_style_request(true);
        }
        if let Some(region) = &self.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let (Some(key), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret);
        }
        if let Some(token) = &self.session_token {
            builder = builder.with_token(token);
        }
        builder
    }
}

/// A bucket and a key prefix, parsed from `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    /// The bucket.
    pub bucket: String,
    /// The key prefix without leading or trailing `/` (empty: the whole bucket).
    pub prefix: String,
}

/// An `s3://` URL that cannot name a bucket prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?} is not an s3://bucket/prefix URL: {reason}")]
pub struct S3UrlError {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

impl S3Url {
    /// Parses `s3://bucket` or `s3://bucket/some/prefix` (a trailing `/` is allowed).
    pub fn parse(url: &str) -> Result<S3Url, S3UrlError> {
        let error = |reason: &str| S3UrlError {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| error("it must start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // The S3 bucket naming rules, which S3-compatible servers follow too.
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.as_bytes()[0].is_ascii_alphanumeric()
            && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
        if !bucket_ok {
            return Err(error(
                "the bucket must be 3 to 63 lowercase letters, digits, '.' or '-'",
            ));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty()
            && prefix
                .split('/')
                .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        {
            return Err(error(
                "the prefix must not have empty, '.' or '..' segments",
            ));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_ones_say_why() {
        assert_eq!(
            S3Url::parse("s3://lake-bucket/tidewatch/prod/").unwrap(),
            S3Url {
                bucket: "lake-bucket".into(),
                prefix: "tidewatch/prod".into()
            }
        );
        let bare = S3Url::parse("s3://lake-bucket").unwrap();
        assert_eq!(bare.prefix, "");
        assert_eq!(bare.to_string(), "s3://lake-bucket");
        for (bad, why) in [
            ("/var/lake", "must start with s3://"),
            ("s3://", "bucket"),
            ("s3://Bad_Bucket/x", "bucket"),
            ("s3://bucket/a//b", "segments"),
            ("s3://bucket/../b", "segments"),
        ] {
            let error = S3Url::parse(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn settings_parse_strictly_and_validate() {
        let connection: S3Connection = toml::from_str(
            "endpoint = \"http://127.0.0.1:9000\"\nallow_http = true\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n",
        )
        .unwrap();
        assert!(connection.problems().is_empty());
        assert!(
            !format!("{connection:?}").contains("\"s\""),
            "secret redacted"
        );
        assert!(toml::from_str::<S3Connection>("endpiont = \"x\"").is_err());
        let bad = S3Connection {
            endpoint: Some("127.0.0.1:9000".into()),
            access_key_id: Some("k".into()),
            ..S3Connection::default()
        };
        let problems = bad.problems().join("\n");
        assert!(problems.contains("go together"), "{problems}");
        assert!(problems.contains("http://"), "{problems}");
    }
}
