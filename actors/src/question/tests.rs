//! The question language, case by case: what parses to what, what is refused and where, and
//! what a filter picks on machines with several values or a failed sensor.

use super::*;
use crate::sensors::catalog_with;

fn catalog() -> Vec<SensorSpec> {
    catalog_with(&[])
}

fn s(name: &str) -> SensorRef {
    SensorRef {
        name: name.into(),
        args: vec![],
    }
}

fn with(name: &str, arg: &str) -> SensorRef {
    SensorRef {
        name: name.into(),
        args: vec![arg.into()],
    }
}

fn cmp(sensor: SensorRef, op: Op, value: Value) -> Filter {
    Filter::Cmp { sensor, op, value }
}

fn text(v: &str) -> Value {
    Value::Text(v.into())
}

/// The filter of `Get Computer Name from all machines with <condition>`.
fn filter(condition: &str) -> Filter {
    let q = format!("Get Computer Name from all machines with {condition}");
    parse(&q, &catalog())
        .unwrap_or_else(|e| panic!("{condition}: {e}"))
        .filter
        .expect("a filter")
}

/// The error for `Get Computer Name from all machines with <condition>`, with the column
/// counted from the condition's start (1-based).
fn refused(condition: &str) -> (usize, String) {
    let prefix = "Get Computer Name from all machines with ";
    let e = parse(&format!("{prefix}{condition}"), &catalog()).expect_err(condition);
    (e.column - prefix.chars().count(), e.to_string())
}

#[test]
fn questions_parse_to_the_expected_ast_and_print_back_to_it() {
    let cases: Vec<(&str, Question)> = vec![
        (
            "Get Computer Name",
            Question {
                select: vec![s("Computer Name")],
                filter: None,
            },
        ),
        (
            "get computer name and operating system from all machines",
            Question {
                select: vec![s("Computer Name"), s("Operating System")],
                filter: None,
            },
        ),
        (
            r#"Get Computer Name and Operating System from all machines with Installed Applications contains "openssl" and Uptime > 86400"#,
            Question {
                select: vec![s("Computer Name"), s("Operating System")],
                filter: Some(Filter::And(vec![
                    cmp(s("Installed Applications"), Op::Contains, text("openssl")),
                    cmp(s("Uptime"), Op::Gt, Value::Number(86400.0)),
                ])),
            },
        ),
        (
            "Get Installed Application Version[openssl], IP Address from all endpoints with (OS Version starts with 22 or OS Version ends with '.04') and not File Exists[/etc/nologin] equals true",
            Question {
                select: vec![
                    with("Installed Application Version", "openssl"),
                    s("IP Address"),
                ],
                filter: Some(Filter::And(vec![
                    Filter::Or(vec![
                        cmp(s("OS Version"), Op::StartsWith, text("22")),
                        cmp(s("OS Version"), Op::EndsWith, text(".04")),
                    ]),
                    Filter::Not(Box::new(cmp(
                        with("File Exists", "/etc/nologin"),
                        Op::Equals,
                        text("true"),
                    ))),
                ])),
            },
        ),
        (
            // "and" binds tighter than "or"; chains are flat lists.
            r#"Get Computer Name from all machines with Computer Name matches "^web-[0-9]+$" or Uptime <= 60 and Uptime != 0 or Computer Name = db"#,
            Question {
                select: vec![s("Computer Name")],
                filter: Some(Filter::Or(vec![
                    cmp(s("Computer Name"), Op::Matches, text("^web-[0-9]+$")),
                    Filter::And(vec![
                        cmp(s("Uptime"), Op::Le, Value::Number(60.0)),
                        cmp(s("Uptime"), Op::NotEquals, Value::Number(0.0)),
                    ]),
                    cmp(s("Computer Name"), Op::Equals, text("db")),
                ])),
            },
        ),
        (
            // Parenthesised lists of the same kind are spliced into one.
            "Get Uptime from all machines with (Uptime > 1 or Uptime > 2) or (Uptime > 3)",
            Question {
                select: vec![s("Uptime")],
                filter: Some(Filter::Or(vec![
                    cmp(s("Uptime"), Op::Gt, Value::Number(1.0)),
                    cmp(s("Uptime"), Op::Gt, Value::Number(2.0)),
                    cmp(s("Uptime"), Op::Gt, Value::Number(3.0)),
                ])),
            },
        ),
        (
            // Quoted parameters are unquoted, and may hold commas and spaces.
            r#"Get File Exists["/opt/my app/run, now.sh"] and File Hash['/etc/passwd'] from all machines"#,
            Question {
                select: vec![
                    with("File Exists", "/opt/my app/run, now.sh"),
                    with("File Hash", "/etc/passwd"),
                ],
                filter: None,
            },
        ),
    ];
    for (text, want) in cases {
        let got = parse(text, &catalog()).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(got, want, "{text}");
        // What it prints parses back to the same question.
        assert_eq!(
            parse(&got.to_string(), &catalog()).unwrap_or_else(|e| panic!("{got}: {e}")),
            got,
            "{got}"
        );
    }
}

#[test]
fn operators_as_operators_write_them() {
    let cases: Vec<(&str, Filter)> = vec![
        (
            "Installed Applications does not contain vim",
            cmp(s("Installed Applications"), Op::NotContains, text("vim")),
        ),
        (
            "Installed Applications doesn't contain vim",
            cmp(s("Installed Applications"), Op::NotContains, text("vim")),
        ),
        (
            "Installed Applications not contains vim",
            cmp(s("Installed Applications"), Op::NotContains, text("vim")),
        ),
        (
            "Operating System is not Ubuntu",
            cmp(s("Operating System"), Op::NotEquals, text("Ubuntu")),
        ),
        (
            "Operating System <> Ubuntu",
            cmp(s("Operating System"), Op::NotEquals, text("Ubuntu")),
        ),
        (
            "Operating System does not equal Ubuntu",
            cmp(s("Operating System"), Op::NotEquals, text("Ubuntu")),
        ),
        (
            "Operating System == Ubuntu",
            cmp(s("Operating System"), Op::Equals, text("Ubuntu")),
        ),
        (
            "Operating System is \u{201c}Rocky Linux\u{201d}",
            cmp(s("Operating System"), Op::Equals, text("Rocky Linux")),
        ),
        (
            "Operating System is \u{2018}Debian\u{2019}",
            cmp(s("Operating System"), Op::Equals, text("Debian")),
        ),
    ];
    for (condition, want) in cases {
        assert_eq!(filter(condition), want, "{condition}");
    }
}

#[test]
fn values_keep_their_text_and_units_scale_numbers() {
    let cases: Vec<(&str, Filter)> = vec![
        // Text comparisons take the characters as written.
        (
            "Kernel Version starts with 6.10",
            cmp(s("Kernel Version"), Op::StartsWith, text("6.10")),
        ),
        (
            "Computer Name ends with 0010",
            cmp(s("Computer Name"), Op::EndsWith, text("0010")),
        ),
        (
            "Memory > 8 GB",
            cmp(s("Memory"), Op::Gt, Value::Number(8e9)),
        ),
        (
            "Memory >= 8GiB",
            cmp(s("Memory"), Op::Ge, Value::Number(8.0 * 1073741824.0)),
        ),
        (
            "Disk Free < \"10 GiB\"",
            cmp(s("Disk Free"), Op::Lt, Value::Number(10.0 * 1073741824.0)),
        ),
        (
            "Uptime > 1 day",
            cmp(s("Uptime"), Op::Gt, Value::Number(86_400.0)),
        ),
        (
            "Uptime > 90 days",
            cmp(s("Uptime"), Op::Gt, Value::Number(90.0 * 86_400.0)),
        ),
        (
            "Uptime < 2h",
            cmp(s("Uptime"), Op::Lt, Value::Number(7200.0)),
        ),
        (
            "Uptime = 60",
            cmp(s("Uptime"), Op::Equals, Value::Number(60.0)),
        ),
        // Version sensors order versions.
        (
            "Installed Application Version[openssl] < 3.0.13",
            cmp(
                with("Installed Application Version", "openssl"),
                Op::Lt,
                Value::Version("3.0.13".into()),
            ),
        ),
        (
            "File Exists[/etc/passwd] is yes",
            cmp(with("File Exists", "/etc/passwd"), Op::Equals, text("true")),
        ),
    ];
    for (condition, want) in cases {
        assert_eq!(filter(condition), want, "{condition}");
    }
}

#[test]
fn errors_say_where_and_what_and_suggest_the_closest_sensor() {
    let cases: Vec<(&str, usize, &str, Option<&str>)> = vec![
        (
            "Get Computr Name",
            5,
            "unknown sensor \"Computr Name\"",
            Some("Computer Name"),
        ),
        (
            "Get Computer Name from all machines with Uptme > 5",
            42,
            "unknown sensor \"Uptme\"",
            Some("Uptime"),
        ),
        ("Get Bananas", 5, "unknown sensor \"Bananas\"", None),
        (
            "Computer Name",
            1,
            "expected \"Get\" at the start of a question, found \"Computer\"",
            None,
        ),
        (
            "Get",
            4,
            "expected a sensor name, found the end of the question",
            None,
        ),
        (
            "Get Uptime from some machines",
            17,
            "expected \"all\" (as in \"from all machines\"), found \"some\"",
            None,
        ),
        (
            "Get Uptime from all machines with Uptime > lots",
            44,
            "\">\" on Uptime needs a number (units:",
            None,
        ),
        (
            "Get Uptime from all machines with Uptime",
            41,
            "expected an operator (contains, does not contain, =, !=,",
            None,
        ),
        (
            "Get Uptime from all machines with (Uptime > 5",
            35,
            "unclosed parenthesis, found the end of the question",
            None,
        ),
        (
            "Get Uptime from all machines with Uptime contains \"x",
            51,
            "unterminated quoted value",
            None,
        ),
        (
            "Get Installed Application Version",
            5,
            "sensor \"Installed Application Version\" needs 1 parameter (package name), as in",
            None,
        ),
        (
            "Get Uptime[3]",
            5,
            "sensor \"Uptime\" takes no parameter",
            None,
        ),
        (
            "Get Uptime from all machines with Computer Name matches \"(\"",
            57,
            "invalid regular expression",
            None,
        ),
        (
            "Get Uptime Uptime",
            12,
            "expected \"and\", \",\" or \"from all machines\", found \"Uptime\"",
            None,
        ),
        (
            "Get Uptime from all machines with Uptime starts 5",
            42,
            "expected \"starts with\"",
            None,
        ),
        // Several parameters where one is taken: refused, not half-used.
        (
            "Get File Exists[/etc/hosts,/etc/passwd]",
            5,
            "sensor \"File Exists\" takes 1 parameter (path), given 2 (quote a parameter that holds a comma)",
            None,
        ),
        (
            "Get File Exists[]",
            5,
            "sensor \"File Exists\" needs 1 parameter",
            None,
        ),
        (
            "Get File Exists[\"\"]",
            5,
            "sensor \"File Exists\": parameter 1 is empty",
            None,
        ),
        (
            "Get File Exists[\"/a\" x]",
            22,
            "expected ',' or ']' after a quoted parameter",
            None,
        ),
    ];
    for (text, column, message, suggestion) in cases {
        let e = parse(text, &catalog()).expect_err(text);
        assert_eq!(e.column, column, "{text}: {e}");
        assert!(e.message.starts_with(message), "{text}: {e}");
        assert_eq!(e.suggestion.as_deref(), suggestion, "{text}: {e}");
    }
    let shown = parse("Get Computr Name", &catalog())
        .expect_err("typo")
        .to_string();
    assert_eq!(
        shown,
        "at column 5: unknown sensor \"Computr Name\" (did you mean \"Computer Name\"?)"
    );
}

#[test]
fn nonsense_that_used_to_be_taken_silently_is_refused_with_its_reason() {
    let cases: Vec<(&str, usize, &str)> = vec![
        // "is not" with no value was "= not".
        (
            "Operating System is not",
            24,
            "expected a value, found the end of the question",
        ),
        (
            "Operating System is not and Uptime > 5",
            25,
            "expected a value, found \"and\" (quote it to compare with the word)",
        ),
        // Ordering a text sensor matched nothing without a word.
        (
            "Operating System > 5",
            18,
            "\">\" compares numbers and versions, and Operating System is text;",
        ),
        (
            "Computer Name < abc",
            15,
            "\"<\" compares numbers and versions, and Computer Name is text;",
        ),
        (
            "Uptime > 8 GB",
            10,
            "\"GB\" is not a unit of Uptime (a duration;",
        ),
        (
            "Memory > 2 days",
            10,
            "\"days\" is not a unit of Memory (a size;",
        ),
        ("Uptime = soon", 10, "\"=\" on Uptime needs a number"),
        (
            "File Exists[/x] = maybe",
            19,
            "File Exists is true or false, found \"maybe\"",
        ),
        (
            "Operating System is Rocky Linux",
            27,
            "unexpected \"Linux\" (quote a value that has spaces: \"Rocky Linux\")",
        ),
        (
            "Operating System does contain x",
            18,
            "expected \"does not contain\" or \"does not equal\"",
        ),
        // Found by the parser's property test: a stray closing quote stalled the lexer,
        // which grew its token list without end.
        (
            "Operating System = \u{201d}Ubuntu",
            20,
            "'\u{201d}' without an opening quote",
        ),
    ];
    for (condition, column, message) in cases {
        let (c, e) = refused(condition);
        assert_eq!(c, column, "{condition}: {e}");
        assert!(e.contains(message), "{condition}: {e}");
    }
}

#[test]
fn an_error_never_repeats_a_huge_input() {
    let huge = "y".repeat(100_000);
    for text in [
        format!("Get {huge}"),
        format!("Get Uptime from all machines with Uptime > \"{huge}\""),
        format!("Get Uptime from all machines with Uptime > 5 \"{huge}\""),
    ] {
        let e = parse(&text, &catalog()).expect_err("refused").to_string();
        assert!(e.len() < 300, "{} bytes: {}", e.len(), &e[..300]);
        assert!(e.contains('…'), "{e}");
    }
}

#[test]
fn deep_nesting_is_refused_at_its_column_and_never_overflows_the_stack() {
    let prefix = "Get Computer Name from all machines with ";
    let at_limit = prefix.chars().count() + MAX_DEPTH + 1;
    let cases: Vec<String> = vec![
        // 2,000 open parentheses: not even a question.
        format!("{prefix}{}", "(".repeat(2000)),
        // 1,750 balanced parentheses around a valid filter.
        format!("{prefix}{}Uptime > 5{}", "(".repeat(1750), ")".repeat(1750)),
    ];
    for text in &cases {
        let e = parse(text, &catalog()).expect_err("too deep");
        assert_eq!(e.column, at_limit, "{e}");
        assert!(e.message.contains("nest more than 32 deep"), "{e}");
    }
    // 4,000 nested "not": each is four characters wide.
    let nots = format!("{prefix}{}Uptime > 5", "not ".repeat(4000));
    let e = parse(&nots, &catalog()).expect_err("too deep");
    assert_eq!(e.column, prefix.chars().count() + 4 * MAX_DEPTH + 1, "{e}");
    // At the limit itself, it parses.
    let deepest = format!(
        "{prefix}{}Uptime > 5{}",
        "(".repeat(MAX_DEPTH),
        ")".repeat(MAX_DEPTH)
    );
    let q = parse(&deepest, &catalog()).expect("32 deep is allowed");
    assert_eq!(q.check(), Ok(()));
}

#[test]
fn a_thousand_alternatives_are_one_flat_list_that_survives_the_wire() {
    let names: Vec<String> = (0..1030)
        .map(|i| format!("\"host-{i:05}.corp.example\""))
        .collect();
    let condition = names
        .iter()
        .map(|n| format!("Computer Name = {n}"))
        .collect::<Vec<_>>()
        .join(" or ");
    let text = format!("Get Computer Name from all machines with {condition}");
    assert!(text.len() > 34_000);
    let q = parse(&text, &catalog()).expect("a long list parses");
    match &q.filter {
        Some(Filter::Or(items)) => assert_eq!(items.len(), 1030),
        other => panic!("{other:?}"),
    }
    // What endpoints decode: the same question, within every limit.
    let body = rollcall_runtime::wire::encode_body(&q).expect("encodes");
    let back: Question = rollcall_runtime::wire::decode_body(&body).expect("decodes");
    assert_eq!(back, q);
    assert_eq!(back.check(), Ok(()));
    let f = back.filter.expect("filter");
    let name_is = |name: &'static str| f.eval(&move |_: &SensorRef| Some(vec![name.to_string()]));
    assert_eq!(name_is("HOST-01029.corp.example"), Truth::True);
    assert_eq!(name_is("host-01030.corp.example"), Truth::False);
}

#[test]
fn too_many_conditions_or_too_long_a_text_is_refused_before_anything_is_sent() {
    let condition = vec!["Uptime > 1"; MAX_CONDITIONS + 1].join(" or ");
    let (_, e) = refused(&condition);
    assert!(e.contains("more than 4096 conditions"), "{e}");
    let long = format!(
        "Get Computer Name from all machines with Computer Name = \"{}\"",
        "x".repeat(MAX_QUESTION_BYTES)
    );
    let e = parse(&long, &catalog()).expect_err("too long");
    assert!(e.message.contains("at most 262144 are accepted"), "{e}");
    assert_eq!(e.column, MAX_QUESTION_BYTES + 1);
}

#[test]
fn a_decoded_question_past_the_limits_is_refused_by_check() {
    let leaf = cmp(s("Uptime"), Op::Gt, Value::Number(1.0));
    let mut deep = leaf.clone();
    for _ in 0..(2 * MAX_DEPTH + 5) {
        deep = Filter::Not(Box::new(deep));
    }
    let q = |filter: Filter| Question {
        select: vec![s("Uptime")],
        filter: Some(filter),
    };
    assert_eq!(q(deep).check(), Err(LimitError::TooDeep));
    assert_eq!(
        q(Filter::Or(vec![leaf.clone(); MAX_CONDITIONS + 1])).check(),
        Err(LimitError::TooManyConditions)
    );
    assert_eq!(q(Filter::And(vec![])).check(), Err(LimitError::EmptyList));
    assert_eq!(
        Question {
            select: vec![],
            filter: None
        }
        .check(),
        Err(LimitError::Selection(0))
    );
    assert_eq!(q(leaf).check(), Ok(()));
}

/// A machine's values for the filters below: `None` for a sensor that failed there.
fn machine(
    apps: Option<&[&str]>,
    kernel: &str,
    name: &str,
) -> impl Fn(&SensorRef) -> Option<Vec<String>> {
    let apps: Option<Vec<String>> = apps.map(|a| a.iter().map(|x| x.to_string()).collect());
    let (kernel, name) = (kernel.to_string(), name.to_string());
    move |s: &SensorRef| match s.name.as_str() {
        "Installed Applications" => apps.clone(),
        "Kernel Version" => Some(vec![kernel.clone()]),
        "Computer Name" => Some(vec![name.clone()]),
        "Installed Application Version" => Some(vec!["3.0.2-0ubuntu1.15".into()]),
        "Uptime" => Some(vec!["90000".into()]),
        _ => Some(vec![]),
    }
}

#[test]
fn filters_on_several_values_and_failed_sensors_pick_what_an_operator_reads() {
    use Truth::{False, True, Unknown};
    let vim_and_curl = machine(Some(&["curl", "vim"]), "6.1.0-18-amd64", "web-0010");
    let curl_only = machine(Some(&["curl"]), "6.10.2-1", "web-10");
    let failed = machine(None, "6.8.0-45-generic", "db-1");
    let cases: Vec<(&str, [Truth; 3])> = vec![
        ("Installed Applications = vim", [True, False, Unknown]),
        // "!=" is "no value equals", the same as "not ... =".
        ("Installed Applications != vim", [False, True, Unknown]),
        ("not Installed Applications = vim", [False, True, Unknown]),
        (
            "Installed Applications does not contain VI",
            [False, True, Unknown],
        ),
        ("Installed Applications contains url", [True, True, Unknown]),
        // Three-valued: a failed sensor does not make a machine match "without vim".
        (
            "Installed Applications contains vim or Computer Name starts with db",
            [True, False, True],
        ),
        (
            "Installed Applications contains vim and Computer Name starts with db",
            [False, False, Unknown],
        ),
        // Text keeps its characters.
        ("Kernel Version starts with 6.10", [False, True, False]),
        ("Kernel Version starts with 6.1", [True, True, False]),
        ("Computer Name ends with 0010", [True, False, False]),
        // Case-insensitive everywhere, matches included.
        ("Computer Name matches \"^WEB-\"", [True, True, False]),
        (
            "Computer Name matches \"(?-i)^WEB-\"",
            [False, False, False],
        ),
        // Versions and units.
        (
            "Installed Application Version[openssl] < 3.0.13",
            [True, True, True],
        ),
        (
            "Installed Application Version[openssl] > 3.0.2",
            [True, True, True],
        ),
        (
            "Installed Application Version[openssl] >= 3.1",
            [False, False, False],
        ),
        ("Uptime > 1 day", [True, True, True]),
        ("Uptime > 2 days", [False, False, False]),
    ];
    for (condition, want) in cases {
        let f = filter(condition);
        let got = [f.eval(&vim_and_curl), f.eval(&curl_only), f.eval(&failed)];
        assert_eq!(got, want, "{condition}");
    }
}

/// Property targets for the parser, run briefly with the tests and longer by hand
/// (`PROPTEST_CASES=200000 cargo test -p rollcall-actors question::tests::fuzz`): on any text
/// and on random sequences of the language's own tokens, parsing never panics; what parses
/// is within the limits, survives the wire, and prints back to itself; evaluation never
/// panics.
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const PIECES: &[&str] = &[
        "Get",
        "Computer Name",
        "Installed Applications",
        "Uptime",
        "Memory",
        "OS Version",
        "Installed Application Version[openssl]",
        "File Exists[\"/a b\"]",
        "File Exists[/x,/y]",
        "from all machines",
        "with",
        "and",
        "or",
        "not",
        "(",
        ")",
        ",",
        "=",
        "!=",
        "<>",
        "<",
        ">=",
        "contains",
        "does not contain",
        "is",
        "is not",
        "starts with",
        "ends with",
        "matches",
        "\"vim\"",
        "'x'",
        "\u{201c}Ubuntu\u{201d}",
        "5",
        "8 GB",
        "1 day",
        "6.10",
        "\"(\"",
        "\"a\\\"b\"",
        "[",
        "]",
        "!",
        "days",
        "true",
        "\"",
        "",
    ];

    fn tokens() -> impl Strategy<Value = String> {
        proptest::collection::vec(0..PIECES.len(), 0..40)
            .prop_map(|ix| ix.iter().map(|&i| PIECES[i]).collect::<Vec<_>>().join(" "))
    }

    fn holds(text: &str) -> Result<(), TestCaseError> {
        let Ok(q) = parse(text, &catalog()) else {
            return Ok(());
        };
        prop_assert_eq!(q.check(), Ok(()));
        let printed = q.to_string();
        let again = parse(&printed, &catalog());
        prop_assert_eq!(
            again.as_ref().ok(),
            Some(&q),
            "{} printed as {}",
            text,
            printed
        );
        let body = rollcall_runtime::wire::encode_body(&q)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: Question = rollcall_runtime::wire::decode_body(&body)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, &q);
        if let Some(f) = &q.filter {
            let _ = f.eval(&|_: &SensorRef| Some(vec!["vim".into(), "42".into()]));
            let _ = f.eval(&|_: &SensorRef| None::<Vec<String>>);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn any_text(text in "\\PC{0,120}") {
            holds(&text)?;
        }

        #[test]
        fn token_soup(text in tokens()) {
            holds(&format!("Get Computer Name from all machines with {text}"))?;
            holds(&text)?;
        }
    }
}
