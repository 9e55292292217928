use super::*;

const MINER: &str = "9f2c1d0e8b7a6f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c";

fn bundle(objects: &str) -> String {
    format!(
        r#"{{"type":"bundle","id":"bundle--5d0092c5-5f74-4287-9642-33f4c354e56d","objects":[{objects}]}}"#
    )
}

fn indicator(id: &str, pattern: &str) -> String {
    format!(
        r#"{{"type":"indicator","spec_version":"2.1","id":"indicator--{id}","created":"2026-12-01T00:00:00.000Z","modified":"2026-12-01T00:00:00.000Z","pattern":{},"pattern_type":"stix","valid_from":"2026-12-01T00:00:00Z"}}"#,
        serde_json::to_string(pattern).expect("json")
    )
}

#[test]
fn a_stix_bundle_gives_hashes_addresses_and_domains_and_skips_the_rest_with_reasons() {
    let b = bundle(&[
        indicator("1", &format!("[file:hashes.'SHA-256' = '{}']", MINER.to_uppercase())),
        indicator("2", "[ipv4-addr:value = '203.0.113.66'] OR [domain-name:value = 'pool.example.net']"),
        indicator("3", "[file:hashes.MD5 = 'd41d8cd98f00b204e9800998ecf8427e']"),
        indicator("4", "[file:name = 'xmrig' AND file:size > 1000]"),
        indicator("5", "[ipv4-addr:value = '10.0.0.0/8']"),
        indicator("6", "[url:value = 'http://x.example/a'] WITHIN 10 SECONDS"),
        r#"{"type":"malware","id":"malware--1","name":"xmrig","is_family":false}"#.to_string(),
        r#"{"type":"indicator","id":"indicator--7","pattern":"alert tcp any any","pattern_type":"snort"}"#.to_string(),
    ]
    .join(","));
    let got = import(b.as_bytes()).expect("a good bundle");
    assert_eq!(
        got.indicators,
        vec![
            Indicator::Sha256(MINER.into()),
            Indicator::Ip("203.0.113.66".parse().expect("ip")),
            Indicator::Domain("pool.example.net".into()),
        ]
    );
    let why: Vec<(&str, &str)> = got
        .skipped
        .iter()
        .map(|s| (s.what.as_str(), s.why.as_str()))
        .collect();
    assert_eq!(why.len(), 5, "{why:?}");
    assert!(why[0].1.contains("md5 hashes are not recorded"), "{why:?}");
    assert!(
        why[1].0 == "indicator--4" && why[1].1.contains("AND"),
        "{why:?}"
    );
    assert!(why[2].1.contains("address ranges"), "{why:?}");
    assert!(
        why[3].0 == "indicator--6" && why[3].1.contains("WITHIN"),
        "{why:?}"
    );
    assert_eq!(
        why[4],
        ("indicator--7", "snort patterns are not read (stix only)")
    );
}

#[test]
fn malformed_bundles_are_refused_whole_naming_the_problem() {
    let cases = [
        ("[1,2]".to_string(), "the top level is not an object"),
        (
            r#"{"type":"report","objects":[]}"#.to_string(),
            "\"type\" is not \"bundle\"",
        ),
        (r#"{"type":"bundle"}"#.to_string(), "no \"objects\" array"),
        (bundle(r#"{"id":"x"}"#), "object 0 has no \"type\""),
        (
            bundle(r#"{"type":"indicator","id":"indicator--9","pattern_type":"stix"}"#),
            "indicator--9 has no \"pattern\"",
        ),
        (
            bundle(&indicator("8", "[ipv4-addr:value = 'not-an-address']")),
            "indicator--8: \"not-an-address\" is not an IP address",
        ),
        (
            bundle(&format!(
                "{},{}",
                indicator("1", "[domain-name:value = 'ok.example']"),
                indicator("2", "[file:hashes.'SHA-256' = 'abc']")
            )),
            "indicator--2: \"abc\" is not a SHA-256",
        ),
        (r#"{"type":"bundle","objects":[{"#.to_string(), "EOF"),
    ];
    for (text, want) in cases {
        let e = import(text.as_bytes()).expect_err(&text);
        assert!(e.to_string().contains(want), "{text}: {e}");
    }
    // Deep nesting is refused by the decoder's limit, not followed.
    let deep = format!(r#"{{"type":"bundle","objects":[{}]}}"#, "[".repeat(10_000));
    assert!(import(deep.as_bytes()).is_err());
}

#[test]
fn csv_with_a_header_or_bare_values_and_its_errors_by_line() {
    let csv = format!(
        "# feed of 2026-12-01\ntype,value,description\nsha256,{MINER},miner\nip,203.0.113.66,pool\ndomain,Pool.Example.NET.,pool\nmd5,d41d8cd98f00b204e9800998ecf8427e,old\nsha256,{MINER},again\n"
    );
    let got = import(csv.as_bytes()).expect("good csv");
    assert_eq!(got.indicators.len(), 3, "{got:?}");
    assert_eq!(
        got.indicators[2],
        Indicator::Domain("pool.example.net".into())
    );
    assert_eq!(got.skipped.len(), 1);
    let bare = format!("{MINER}\n203.0.113.66\n\nbad.example\n");
    assert_eq!(import(bare.as_bytes()).expect("bare").indicators.len(), 3);
    let e = import(b"type,value\nsha256,xyz\n").expect_err("bad hash");
    assert_eq!(
        e.to_string(),
        "line 2: \"xyz\" is not a SHA-256 (64 hex digits)"
    );
    let e = import(b"203.0.113.66\nnot a thing!\n").expect_err("bad value");
    assert!(e.to_string().starts_with("line 2: "), "{e}");
    let e = import(b"type,other\nsha256,x\n").expect_err("half a header");
    assert!(e.to_string().contains("both a type and a value"), "{e}");
    let e = import(b"a,b\n").expect_err("no header");
    assert!(e.to_string().contains("without a header"), "{e}");
}

#[test]
fn patterns_read_or_joined_comparisons_only() {
    assert_eq!(
        parse_pattern("[ipv4-addr:value = '1.2.3.4' OR ipv6-addr:value = '::1']").expect("ok"),
        vec![
            ("ipv4-addr:value".to_string(), "1.2.3.4".to_string()),
            ("ipv6-addr:value".to_string(), "::1".to_string()),
        ]
    );
    assert_eq!(
        parse_pattern(r"[domain-name:value = 'it\'s.example']").expect("escape"),
        vec![("domain-name:value".to_string(), "it's.example".to_string())]
    );
    for bad in [
        "",
        "[",
        "[]",
        "[a:b = 'c'",
        "[a:b != 'c']",
        "[a:b LIKE 'c']",
        "[a:b = 'c'] AND [d:e = 'f']",
        "[a:b = 'c'] FOLLOWEDBY [d:e = 'f']",
        "([a:b = 'c'])",
        "[a:b = 'unclosed]",
        "[a:b = 'c'] OR",
    ] {
        assert!(parse_pattern(bad).is_err(), "{bad:?} read");
    }
    assert!(parse_pattern(&"[a:b = 'c'] OR ".repeat(1000)).is_err());
}

#[test]
fn alerts_carry_indicators_and_malformed_ones_are_refused() {
    let a = alert::parse_alert(
        format!(
            r#"{{"product":"edr","id":"A-1","title":"miner","indicators":[{{"type":"sha256","value":"{MINER}"}},{{"type":"url","value":"http://x"}}]}}"#
        )
        .as_bytes(),
    )
    .expect("alert");
    assert_eq!(a.product, "edr");
    assert_eq!(a.imported.indicators, vec![Indicator::Sha256(MINER.into())]);
    assert_eq!(a.imported.skipped.len(), 1);
    for (bad, why) in [
        ("{}", "missing field"),
        (
            r#"{"product":"edr","id":"1","indicators":[]}"#,
            "no indicators",
        ),
        (
            r#"{"product":"","id":"1","indicators":[{"type":"ip","value":"1.2.3.4"}]}"#,
            "names no product",
        ),
        (
            r#"{"product":"e","id":"1","indicators":[{"type":"ip","value":"x"}]}"#,
            "indicator 0: \"x\" is not an IP address",
        ),
        (
            r#"{"product":"e","id":"1","indicators":[{"type":"ip","value":"1.2.3.4","extra":1}]}"#,
            "unknown field",
        ),
    ] {
        let e = alert::parse_alert(bad.as_bytes()).expect_err(bad);
        assert!(e.contains(why), "{bad}: {e}");
    }
}

mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_bytes_are_read_or_refused_never_a_panic(b in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = import(&b);
            let _ = from_csv(&b);
            let _ = from_stix(&b);
            let _ = alert::parse_alert(&b);
        }

        #[test]
        fn any_pattern_is_read_or_refused(p in "[\\[\\]'= A-Za-z0-9:.\\\\-]{0,200}") {
            if let Ok(c) = parse_pattern(&p) {
                prop_assert!(!c.is_empty());
            }
        }
    }
}
