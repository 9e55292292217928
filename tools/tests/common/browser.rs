//! Headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`), for
//! the console's browser tests: a few WebDriver commands over HTTP on loopback, and waits
//! that are events in the page (a `MutationObserver`) bounded by WebDriver's script timeout.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running chromedriver, killed when dropped.
pub struct Driver {
    child: Child,
    base: String,
    agent: ureq::Agent,
    profiles: tempfile::TempDir,
}

impl Driver {
    /// Starts chromedriver, or says why it cannot (`Err` with the reason: not installed).
    pub fn start() -> Result<Driver, String> {
        for p in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(p).exists() {
                return Err(format!(
                    "{p} is missing (Debian packages chromium and chromium-driver; .ci/run installs them)"
                ));
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| e.to_string())?;
        let mut child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {CHROMEDRIVER}: {e}"))?;
        // It says when it listens.
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains("started successfully") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            return Err("chromedriver did not start within 30 s".into());
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Ok(Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            agent,
            profiles: tempfile::tempdir().expect("tmp"),
        })
    }

    fn send(&self, method: &str, url: &str, body: Option<Value>) -> Value {
        let resp = match (method, body) {
            ("GET", _) => self.agent.get(url).call(),
            ("DELETE", _) => self.agent.delete(url).call(),
            (_, b) => self
                .agent
                .post(url)
                .header("content-type", "application/json")
                .send(b.unwrap_or(json!({})).to_string()),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("WebDriver {method} {url}: {e}"));
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .expect("WebDriver reply");
        let v: Value = serde_json::from_str(&text).expect("WebDriver JSON");
        if status >= 400 {
            panic!(
                "WebDriver {method} {url}: {} {}",
                v["value"]["error"], v["value"]["message"]
            );
        }
        v["value"].clone()
    }

    /// A new browser session with a window of 1280×800 and a profile of its own.
    pub fn session(&self, name: &str) -> Session<'_> {
        let profile = self.profiles.path().join(name);
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,800", "--hide-scrollbars", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-quic", "--disable-extensions",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let v = self.send("POST", &format!("{}/session", self.base), Some(caps));
        let id = v["sessionId"].as_str().expect("session id").to_string();
        let s = Session {
            driver: self,
            url: format!("{}/session/{id}", self.base),
        };
        s.cmd(
            "POST",
            "/timeouts",
            Some(json!({ "implicit": 0, "script": 60_000, "pageLoad": 60_000 })),
        );
        // The page itself 1280×800, whatever the window's frame takes.
        s.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(
                json!({ "cmd": "Emulation.setDeviceMetricsOverride", "params": {
                    "width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false,
                }}),
            ),
        );
        s
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser window.
pub struct Session<'d> {
    driver: &'d Driver,
    url: String,
}

impl Session<'_> {
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.driver
            .send(method, &format!("{}{path}", self.url), body)
    }

    /// How long [`Session::wait_for`] waits at most (60 s unless set).
    pub fn set_wait(&self, wait: Duration) {
        self.cmd(
            "POST",
            "/timeouts",
            Some(json!({ "script": wait.as_millis() as u64 })),
        );
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `body` (a function body; `arguments` are `args`) and returns what it returns.
    pub fn exec(&self, body: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": body, "args": args })),
        )
    }

    /// Waits until `check` (a function body) returns something truthy, and returns it:
    /// checked now and after every change to the page, for at most the script timeout
    /// (60 s, or as [`Session::set_wait`] set it). Panics with `what` and the page's text if it never does.
    pub fn wait_for(&self, what: &str, check: &str) -> Value {
        let script = format!(
            r#"const done = arguments[arguments.length - 1];
const check = () => {{ {check} }};
let obs = null;
const attempt = () => {{
  let v = null;
  try {{ v = check(); }} catch (e) {{ v = null; }}
  if (v) {{ if (obs) obs.disconnect(); done(v); return true; }}
  return false;
}};
if (!attempt()) {{
  obs = new MutationObserver(attempt);
  obs.observe(document, {{ subtree: true, childList: true, characterData: true, attributes: true }});
}}"#
        );
        let url = format!("{}/execute/async", self.url);
        let resp = self
            .driver
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .send(json!({ "script": script, "args": [] }).to_string());
        let mut resp = resp.unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
        let status = resp.status().as_u16();
        let v: Value = serde_json::from_str(
            &resp
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_string()
                .expect("reply"),
        )
        .expect("JSON");
        if status >= 400 {
            let page = self.exec("return document.body.innerText;", json!([]));
            panic!(
                "waiting for {what}: {} {}\nthe page says:\n{}",
                v["value"]["error"],
                v["value"]["message"],
                page.as_str().unwrap_or_default()
            );
        }
        v["value"].clone()
    }

    fn element(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css:?}: {v}"))
            .to_string()
    }

    /// Clicks the first element `css` selects (it must be there).
    pub fn click(&self, css: &str) {
        let e = self.element(css);
        self.cmd("POST", &format!("/element/{e}/click"), None);
    }

    /// Types `text` into the first element `css` selects.
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// How many elements `css` selects now.
    pub fn count(&self, css: &str) -> usize {
        self.exec(
            "return document.querySelectorAll(arguments[0]).length;",
            json!([css]),
        )
        .as_u64()
        .expect("count") as usize
    }

    /// The window as a PNG, written to `path`; returns (width, height).
    pub fn screenshot(&self, path: &Path) -> (u32, u32) {
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64"))
            .expect("PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot folder");
        }
        std::fs::write(path, &png).expect("write screenshot");
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (be(&png[16..20]), be(&png[20..24]))
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self.driver.agent.delete(&self.url).call();
    }
}
