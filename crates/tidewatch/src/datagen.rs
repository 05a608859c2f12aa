//! Deterministic generators of realistic CloudTrail-like and clickstream events, modelled on
//! the reference workload (`shared/bench/gen_events.py`): the same event mix, skewed users,
//! 2.6 % AccessDenied, failed console logins, and 0.4 % planted attacks (brute force from 8 bad
//! IPs, 10 compromised users hopping regions with offensive user agents).
//!
//! The same seed, count, rate and start always give the same bytes (SplitMix64 is written out
//! here so no dependency upgrade can change the stream).

use std::fmt::Write as _;

/// SplitMix64: tiny, fast, and stable forever.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Which kind of events to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// AWS CloudTrail management and data events.
    Cloudtrail,
    /// Web shop clickstream (page views, carts, purchases).
    Clickstream,
}

const REGIONS: [&str; 16] = [
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "eu-west-2",
    "eu-central-1",
    "eu-north-1",
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ca-central-1",
    "sa-east-1",
    "me-south-1",
];
const COUNTRIES: [(&str, u32); 12] = [
    ("US", 40),
    ("DE", 8),
    ("GB", 8),
    ("FR", 5),
    ("IN", 6),
    ("JP", 5),
    ("BR", 4),
    ("CA", 4),
    ("AU", 3),
    ("NL", 4),
    ("SG", 3),
    ("IE", 3),
];
const ATTACK_COUNTRIES: [&str; 8] = ["RU", "CN", "KP", "IR", "BR", "NL", "RO", "VN"];
const USER_AGENTS: [&str; 10] = [
    "aws-cli/2.15.10 Python/3.11.6 Linux/5.15.0-1051-aws",
    "Boto3/1.34.11 md/Botocore#1.34.11 os/linux#5.10.205",
    "aws-sdk-java/2.20.162 Linux/5.10.199 OpenJDK_64-Bit_Server_VM",
    "aws-sdk-go-v2/1.24.0 os/linux lang/go#1.21.5",
    "Terraform/1.6.6 terraform-provider-aws/5.31.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Safari/605.1.15",
    "[S3Console/0.4, aws-internal/3 aws-sdk-java/1.12.488]",
    "console.amazonaws.com",
    "signin.amazonaws.com",
];
const ATTACK_USER_AGENTS: [&str; 4] = [
    "aws-cli/1.18.69 Python/3.8.5 Linux/5.4.0-kali3-amd64 botocore/1.17.42",
    "python-requests/2.31.0",
    "curl/8.4.0",
    "Pacu/1.5.2 Boto3/1.26.0 Python/3.10.12",
];
/// (eventName, service, weight per 10,000 normal events)
const MIX: [(&str, &str, u32); 24] = [
    ("GetObject", "s3", 2600),
    ("PutObject", "s3", 900),
    ("ListObjects", "s3", 400),
    ("DeleteObject", "s3", 150),
    ("DescribeInstances", "ec2", 1500),
    ("RunInstances", "ec2", 120),
    ("TerminateInstances", "ec2", 40),
    ("StopInstances", "ec2", 60),
    ("StartInstances", "ec2", 60),
    ("AuthorizeSecurityGroupIngress", "ec2", 25),
    ("AssumeRole", "sts", 1300),
    ("GetCallerIdentity", "sts", 500),
    ("GetSessionToken", "sts", 100),
    ("ConsoleLogin", "signin", 300),
    ("ListUsers", "iam", 200),
    ("GetUser", "iam", 200),
    ("CreateUser", "iam", 15),
    ("AttachUserPolicy", "iam", 20),
    ("CreateAccessKey", "iam", 20),
    ("PutUserPolicy", "iam", 8),
    ("DeleteUser", "iam", 5),
    ("LookupEvents", "cloudtrail", 100),
    ("StopLogging", "cloudtrail", 1),
    ("DeleteTrail", "cloudtrail", 1),
];
const RECON: [&str; 10] = [
    "ListUsers",
    "DescribeInstances",
    "GetObject",
    "ListObjects",
    "GetUser",
    "CreateAccessKey",
    "AttachUserPolicy",
    "RunInstances",
    "StopLogging",
    "GetCallerIdentity",
];
const READ_ONLY: [&str; 7] = [
    "GetObject",
    "ListObjects",
    "DescribeInstances",
    "GetCallerIdentity",
    "ListUsers",
    "GetUser",
    "LookupEvents",
];
const POLICIES: [&str; 6] = [
    "AmazonS3ReadOnlyAccess",
    "ReadOnlyAccess",
    "AmazonEC2FullAccess",
    "CloudWatchLogsFullAccess",
    "AmazonDynamoDBReadOnlyAccess",
    "AdministratorAccess",
];
const FIRST_NAMES: [&str; 20] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "nick", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yara",
];
const CATEGORIES: [&str; 8] = [
    "electronics",
    "books",
    "home",
    "toys",
    "fashion",
    "sports",
    "beauty",
    "grocery",
];
const REFERRERS: [&str; 7] = [
    "google.com",
    "bing.com",
    "facebook.com",
    "direct",
    "newsletter",
    "instagram.com",
    "t.co",
];

struct Principal {
    name: String,
    arn: String,
    account: String,
    identity: String,
    home: &'static str,
    second: &'static str,
    ips: [(String, &'static str); 3],
    user_agent: &'static str,
}

/// A weighted sampler: cumulative weights, binary-searched.
struct Weighted(Vec<f64>);

impl Weighted {
    fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let mut total = 0.0;
        Self(
            weights
                .into_iter()
                .map(|w| {
                    total += w;
                    total
                })
                .collect(),
        )
    }
    fn sample(&self, rng: &mut Rng) -> usize {
        let x = rng.unit() * self.0.last().copied().unwrap_or(1.0);
        self.0.partition_point(|c| *c <= x).min(self.0.len() - 1)
    }
}

/// An endless, deterministic stream of CloudTrail-like events, one JSON line each.
pub struct CloudTrail {
    rng: Rng,
    principals: Vec<Principal>,
    activity: Weighted,
    mix: Weighted,
    victims: Vec<usize>,
    bad_ips: Vec<(String, &'static str)>,
    ip_pool: Vec<(String, &'static str)>,
    buckets: Vec<String>,
    index: u64,
    rate: u64,
    start_secs: i64,
}

impl CloudTrail {
    /// A generator of `rate` events per simulated second from `start_secs` (Unix seconds).
    pub fn new(seed: u64, rate: u64, start_secs: i64) -> Self {
        let mut rng = Rng::new(seed);
        let accounts: Vec<String> = (0..5)
            .map(|_| (100_000_000_000 + rng.below(900_000_000_000)).to_string())
            .collect();
        let countries = Weighted::new(COUNTRIES.iter().map(|(_, w)| f64::from(*w)));
        let ip_pool: Vec<(String, &'static str)> = (0..5000)
            .map(|_| {
                let first = rng.pick(&[3, 18, 34, 52, 54, 81, 92, 103, 145, 185, 194, 203]);
                let ip = format!(
                    "{first}.{}.{}.{}",
                    rng.below(256),
                    rng.below(256),
                    1 + rng.below(254)
                );
                (ip, COUNTRIES[countries.sample(&mut rng)].0)
            })
            .collect();
        let bad_ips = (0..8)
            .map(|k| {
                let first = rng.pick(&[5, 45, 91, 176, 193]);
                (
                    format!(
                        "{first}.{}.{}.{}",
                        rng.below(256),
                        rng.below(256),
                        1 + rng.below(254)
                    ),
                    ATTACK_COUNTRIES[k],
                )
            })
            .collect();
        let mut principals = Vec::with_capacity(2205);
        for k in 0..2200usize {
            let account = accounts[k % 5].clone();
            let (name, kind, arn) = if k < 2000 {
                let name = format!("{}.{k:04}", FIRST_NAMES[k % 20]);
                let arn = format!("arn:aws:iam::{account}:user/{name}");
                (name, "IAMUser", arn)
            } else {
                let name = format!(
                    "svc-{}-{k:04}",
                    ["deploy", "etl", "backup", "ci", "lambda"][k % 5]
                );
                let arn = format!("arn:aws:sts::{account}:assumed-role/{name}/session-{k}");
                (name, "AssumedRole", arn)
            };
            let identity = format!(
                r#"{{"type":"{kind}","arn":"{arn}","accountId":"{account}","userName":"{name}"}}"#
            );
            let home = REGIONS[((-(1.0 - rng.unit()).ln() / 0.5) as usize).min(15)];
            let second = *rng.pick(&REGIONS);
            let ips = std::array::from_fn(|_| ip_pool[rng.below(5000) as usize].clone());
            let user_agent = *rng.pick(&USER_AGENTS);
            principals.push(Principal {
                name,
                arn,
                account,
                identity,
                home,
                second,
                ips,
                user_agent,
            });
        }
        for account in &accounts {
            let arn = format!("arn:aws:iam::{account}:root");
            let identity = format!(
                r#"{{"type":"Root","arn":"{arn}","accountId":"{account}","userName":"root"}}"#
            );
            let ip = ip_pool[rng.below(5000) as usize].clone();
            principals.push(Principal {
                name: "root".into(),
                arn,
                account: account.clone(),
                identity,
                home: "us-east-1",
                second: "us-east-1",
                ips: [ip.clone(), ip.clone(), ip],
                user_agent: USER_AGENTS[5],
            });
        }
        let activity = Weighted::new(
            (0..2200)
                .map(|k| 1.0 / ((k + 1) as f64).powf(0.8))
                .chain([0.002; 5]),
        );
        let mut victims = Vec::new();
        while victims.len() < 10 {
            let candidate = rng.below(2000) as usize;
            if !victims.contains(&candidate) {
                victims.push(candidate);
            }
        }
        let buckets = [
            "prod-data",
            "logs",
            "backups",
            "analytics",
            "web-assets",
            "ml-train",
            "finance",
        ]
        .iter()
        .flat_map(|w| [0, 1, 2].map(|_| *w))
        .map(|w| format!("{w}-{}", 1000 + rng.below(9000)))
        .collect::<Vec<_>>();
        let mix = Weighted::new(MIX.iter().map(|(_, _, w)| f64::from(*w)));
        Self {
            rng,
            principals,
            activity,
            mix,
            victims,
            bad_ips,
            ip_pool,
            buckets,
            index: 0,
            rate: rate.max(1),
            start_secs,
        }
    }

    /// Appends the next event (one line, with `\n`) to `out`.
    pub fn next_into(&mut self, out: &mut String) {
        let second = self.start_secs + (self.index / self.rate) as i64;
        self.index += 1;
        let time = chrono::DateTime::from_timestamp(second, 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%SZ");
        let rng = &mut self.rng;
        let roll = rng.unit();
        let attack = 0.004;
        let (principal, name, service, ip, country, user_agent, region, error);
        if roll < attack * 0.4 {
            principal = &self.principals[self.activity.sample(rng)];
            (name, service) = ("ConsoleLogin", "signin");
            let bad = &self.bad_ips[rng.below(8) as usize];
            (ip, country) = (bad.0.as_str(), bad.1);
            (user_agent, region, error) =
                (ATTACK_USER_AGENTS[1], "us-east-1", Some("LoginFailure"));
        } else if roll < attack {
            principal = &self.principals[self.victims[rng.below(10) as usize]];
            name = RECON[rng.below(10) as usize];
            service = MIX
                .iter()
                .find(|(n, _, _)| *n == name)
                .map_or("iam", |(_, s, _)| s);
            let bad = &self.bad_ips[rng.below(8) as usize];
            (ip, country) = (bad.0.as_str(), bad.1);
            user_agent = ATTACK_USER_AGENTS[rng.below(4) as usize];
            region = REGIONS[rng.below(16) as usize];
            error = (rng.unit() < 0.7).then_some("AccessDenied");
        } else {
            principal = &self.principals[self.activity.sample(rng)];
            (name, service) = {
                let m = MIX[self.mix.sample(rng)];
                (m.0, m.1)
            };
            let source = if rng.unit() < 0.9 {
                &principal.ips[rng.below(3) as usize]
            } else {
                &self.ip_pool[rng.below(5000) as usize]
            };
            (ip, country) = (source.0.as_str(), source.1);
            user_agent = if service == "signin" {
                USER_AGENTS[5 + rng.below(2) as usize]
            } else {
                principal.user_agent
            };
            region = if service == "iam" || service == "signin" {
                "us-east-1"
            } else if rng.unit() < 0.95 {
                principal.home
            } else {
                principal.second
            };
            let y = rng.unit();
            error = if name == "ConsoleLogin" {
                (y < 0.04).then_some("LoginFailure")
            } else if y < 0.025 {
                Some("AccessDenied")
            } else if y < 0.03 {
                Some("ThrottlingException")
            } else {
                None
            };
        }
        let hash = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
        let event_id = format!(
            "{}-{}-{}-{}-{}",
            &hash[..8],
            &hash[8..12],
            &hash[12..16],
            &hash[16..20],
            &hash[20..]
        );
        let mut additional = format!(r#"{{"country":"{country}"}}"#);
        let mut response = "null".to_string();
        let request_id;
        let request: String;
        if service == "s3" {
            let bucket = &self.buckets[rng.below(21) as usize];
            request_id = hash[..16].to_uppercase();
            request = format!(
                r#"{{"bucketName":"{bucket}","key":"data/{:06}.parquet"}}"#,
                rng.below(100_000)
            );
            additional = format!(
                r#"{{"country":"{country}","bytesTransferredOut":{}}}"#,
                rng.below(10_000_000)
            );
        } else {
            request_id = format!(
                "{:08x}-{}-{}-{}-{}",
                rng.next_u64() as u32,
                &hash[1..5],
                &hash[5..9],
                &hash[9..13],
                &hash[20..]
            );
            request = match name {
                "ConsoleLogin" => {
                    response = format!(
                        r#"{{"ConsoleLogin":"{}"}}"#,
                        if error.is_some() {
                            "Failure"
                        } else {
                            "Success"
                        }
                    );
                    let mfa = if rng.unit() < 0.8 { "Yes" } else { "No" };
                    additional = format!(
                        r#"{{"country":"{country}","LoginTo":"https://console.aws.amazon.com/console/home","MobileVersion":"No","MFAUsed":"{mfa}"}}"#
                    );
                    "null".into()
                }
                "AssumeRole" => {
                    response = format!(
                        r#"{{"credentials":{{"accessKeyId":"ASIA{}"}}}}"#,
                        hash[..16].to_uppercase()
                    );
                    format!(
                        r#"{{"roleArn":"arn:aws:iam::{}:role/app-role-{}","roleSessionName":"s-{}"}}"#,
                        principal.account,
                        rng.below(50),
                        &hash[..8]
                    )
                }
                "RunInstances" => format!(
                    r#"{{"instanceType":"m5.large","imageId":"ami-{}","minCount":1,"maxCount":1}}"#,
                    &hash[..17]
                ),
                "TerminateInstances" | "StopInstances" | "StartInstances" => {
                    let items = format!(
                        r#"{{"instancesSet":{{"items":[{{"instanceId":"i-{}"}}]}}}}"#,
                        &hash[3..20]
                    );
                    if error.is_none() {
                        response = items.clone();
                    }
                    items
                }
                "DescribeInstances" => format!(
                    r#"{{"maxResults":{},"filterSet":{{"items":[{{"name":"tag:env"}}]}}}}"#,
                    5 + rng.below(95)
                ),
                "AuthorizeSecurityGroupIngress" => {
                    let cidr = if rng.unit() < 0.3 {
                        "0.0.0.0/0"
                    } else {
                        "10.0.0.0/8"
                    };
                    format!(
                        r#"{{"groupId":"sg-{}","ipProtocol":"tcp","fromPort":22,"toPort":22,"cidrIp":"{cidr}"}}"#,
                        &hash[..17]
                    )
                }
                "AttachUserPolicy" => format!(
                    r#"{{"userName":"{}","policyArn":"arn:aws:iam::aws:policy/{}"}}"#,
                    self.principals[rng.below(2000) as usize].name,
                    POLICIES[rng.below(6) as usize]
                ),
                "CreateUser" | "DeleteUser" | "GetUser" | "CreateAccessKey" | "PutUserPolicy" => {
                    format!(
                        r#"{{"userName":"{}"}}"#,
                        self.principals[rng.below(2000) as usize].name
                    )
                }
                "StopLogging" | "DeleteTrail" | "LookupEvents" => format!(
                    r#"{{"name":"arn:aws:cloudtrail:{region}:{}:trail/org-trail"}}"#,
                    principal.account
                ),
                _ => "null".into(),
            };
        }
        let error_fields = match error {
            Some("AccessDenied") => format!(
                r#""errorCode":"AccessDenied","errorMessage":"User: {} is not authorized to perform: {service}:{name}","#,
                principal.arn
            ),
            Some("ThrottlingException") => {
                r#""errorCode":"ThrottlingException","errorMessage":"Rate exceeded","#.to_string()
            }
            Some(_) => r#""errorMessage":"Failed authentication","#.to_string(),
            None => String::new(),
        };
        let read_only = READ_ONLY.contains(&name);
        let _ = writeln!(
            out,
            r#"{{"eventVersion":"1.08","userIdentity":{},"eventTime":"{time}","eventSource":"{service}.amazonaws.com","eventName":"{name}","awsRegion":"{region}","sourceIPAddress":"{ip}","userAgent":"{user_agent}",{error_fields}"requestParameters":{request},"responseElements":{response},"additionalEventData":{additional},"requestID":"{request_id}","eventID":"{event_id}","readOnly":{read_only}}}"#,
            principal.identity
        );
    }
}

/// An endless, deterministic stream of web-shop clickstream events.
pub struct Clickstream {
    rng: Rng,
    prices: Vec<f64>,
    sessions: Vec<(String, String)>,
    index: u64,
    rate: u64,
    start_ms: i64,
}

impl Clickstream {
    /// A generator of `rate` events per simulated second from `start_secs`.
    pub fn new(seed: u64, rate: u64, start_secs: i64) -> Self {
        let mut rng = Rng::new(seed);
        let prices = (0..5000)
            .map(|_| ((3.0 + normal(&mut rng)).exp() * 100.0).round() / 100.0)
            .collect();
        let sessions = (0..2000).map(|_| session(&mut rng)).collect();
        Self {
            rng,
            prices,
            sessions,
            index: 0,
            rate: rate.max(1),
            start_ms: start_secs * 1000,
        }
    }

    /// Appends the next event (one line, with `\n`) to `out`.
    pub fn next_into(&mut self, out: &mut String) {
        let ms = self.start_ms + (self.index * 1000 / self.rate) as i64;
        self.index += 1;
        let rng = &mut self.rng;
        let time = chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ");
        let slot = rng.below(2000) as usize;
        if rng.unit() < 0.01 {
            self.sessions[slot] = session(rng);
        }
        let (session_id, user_id) = &self.sessions[slot];
        let kind_roll = rng.unit();
        let kind = if kind_roll < 0.85 {
            "page_view"
        } else if kind_roll < 0.95 {
            "add_to_cart"
        } else {
            "purchase"
        };
        let product = rng.below(5000) as usize;
        let price = self.prices[product];
        let quantity = if kind == "page_view" {
            0
        } else {
            1 + (rng.unit() * 1.5) as u32
        };
        let page = match kind {
            "page_view" => format!("/product/{product}"),
            "add_to_cart" => "/cart".into(),
            _ => "/checkout".into(),
        };
        let status = if rng.unit() < 0.01 { 500 } else { 200 };
        let amount = (price * f64::from(quantity) * 100.0).round() / 100.0;
        let _ = writeln!(
            out,
            r#"{{"timestamp":"{time}","session_id":"{session_id}","user_id":"{user_id}","event_type":"{kind}","properties":{{"page":"{page}","product_id":"P{product:05}","category":"{}","price":{price},"quantity":{quantity},"amount":{amount},"referrer":"{}","status":{status}}}}}"#,
            CATEGORIES[product % 8],
            REFERRERS[rng.below(7) as usize]
        );
    }
}

fn session(rng: &mut Rng) -> (String, String) {
    (
        format!("{:012x}", rng.next_u64() >> 16),
        format!("u{:07}", rng.below(1_000_000)),
    )
}

/// A standard normal variate (Box–Muller).
fn normal(rng: &mut Rng) -> f64 {
    let u1 = rng.unit().max(f64::MIN_POSITIVE);
    let u2 = rng.unit();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Either generator behind one interface.
pub enum Generator {
    /// CloudTrail-like.
    Cloudtrail(Box<CloudTrail>),
    /// Clickstream.
    Clickstream(Clickstream),
}

impl Generator {
    /// A generator of `kind`.
    pub fn new(kind: Kind, seed: u64, rate: u64, start_secs: i64) -> Self {
        match kind {
            Kind::Cloudtrail => Self::Cloudtrail(Box::new(CloudTrail::new(seed, rate, start_secs))),
            Kind::Clickstream => Self::Clickstream(Clickstream::new(seed, rate, start_secs)),
        }
    }

    /// Appends the next event line to `out`.
    pub fn next_into(&mut self, out: &mut String) {
        match self {
            Self::Cloudtrail(generator) => generator.next_into(out),
            Self::Clickstream(generator) => generator.next_into(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(kind: Kind, seed: u64, count: usize) -> String {
        let mut generator = Generator::new(kind, seed, 1000, 1_709_251_200);
        let mut out = String::new();
        for _ in 0..count {
            generator.next_into(&mut out);
        }
        out
    }

    #[test]
    fn same_seed_same_bytes_and_every_line_is_json() {
        for kind in [Kind::Cloudtrail, Kind::Clickstream] {
            let a = lines(kind, 42, 3000);
            assert_eq!(a, lines(kind, 42, 3000));
            assert_ne!(a, lines(kind, 43, 3000));
            for line in a.lines() {
                let value: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                assert!(value.is_object());
            }
        }
    }

    #[test]
    fn cloudtrail_mix_matches_the_reference_shape() {
        let text = lines(Kind::Cloudtrail, 42, 50_000);
        let denied = text.matches(r#""errorCode":"AccessDenied""#).count() as f64 / 50_000.0;
        assert!(
            (0.02..0.035).contains(&denied),
            "AccessDenied share {denied}"
        );
        assert!(
            text.contains("python-requests/2.31.0"),
            "planted brute force present"
        );
        let mean = text.len() / 50_000;
        assert!((500..800).contains(&mean), "mean event size {mean}");
    }
}
