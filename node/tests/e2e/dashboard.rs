//! The dashboard in a real browser: `shoal testnet --nodes 3`, node 1's dashboard opened in
//! headless Chromium through chromedriver (WebDriver). From the page's DOM: three members alive;
//! a put made through the page's form shows up among the node's records; a key too long shows
//! the JSON-RPC error's own text; node 3 killed with SIGKILL turns suspect, then dead, on the page
//! without a reload; at 420 px wide no view is wider than the screen. A screenshot of every view
//! goes to `target/tmp/dashboard/`.
//!
//! Skipped, with a message, when `chromium` or `chromedriver` is not installed
//! (`.ci/install-deps` installs both, as root).

use std::net::TcpListener;

use fantoccini::{Client, ClientBuilder, Locator};

use super::*;

/// What a page may take to show something (a state change, a stored record).
const PAGE_LIMIT: Duration = Duration::from_secs(60);

/// A free port on loopback for chromedriver.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts chromedriver and a headless Chromium session through it.
async fn browser() -> (KillOnDrop, Client) {
    let port = free_port();
    let driver = KillOnDrop(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,800",
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return (driver, client),
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(30),
                "no browser session within 30 s: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `probe` every 100 ms until it gives a value, within `limit`.
async fn until<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The attribute `name` of the first element matching `css`, if both exist.
async fn attr(page: &Client, css: &str, name: &str) -> Option<String> {
    let element = page.find(Locator::Css(css)).await.ok()?;
    element.attr(name).await.ok().flatten()
}

/// The visible text of the first element matching `css`, if it exists.
async fn text(page: &Client, css: &str) -> Option<String> {
    let element = page.find(Locator::Css(css)).await.ok()?;
    element.text().await.ok()
}

async fn click(page: &Client, css: &str) {
    page.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn fill(page: &Client, css: &str, value: &str) {
    let input = page
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    input.clear().await.expect("clear");
    input.send_keys(value).await.expect("type");
}

/// Opens the view `name` from its tab and saves a screenshot of it as `name.png`.
async fn shoot(page: &Client, name: &str, dir: &Path) {
    click(page, &format!("#tab-{name}")).await;
    // Let the view's first data arrive so the picture shows it.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let png = page.screenshot().await.expect("a screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot saved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_testnet_live_in_a_browser() {
    if !installed("chromium") || !installed("chromedriver") {
        skipped("the dashboard's browser test: chromium and chromedriver are not installed");
        return;
    }
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let (testnet, nodes) = start_testnet(3, dir.path()).await;
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    let (_driver, page) = browser().await;

    page.goto(&format!("{}/#members", nodes[0].url))
        .await
        .expect("the dashboard loads");
    // A mark that a reload would wipe.
    page.execute("window.shoalTestMark = 42; return true;", vec![])
        .await
        .expect("script runs");
    until("3 members alive on the page", PAGE_LIMIT, || async {
        (attr(&page, "#members-summary", "data-alive")
            .await
            .as_deref()
            == Some("3"))
        .then_some(())
    })
    .await;
    for peer in [&nodes[1].peer, &nodes[2].peer] {
        let css = format!(r#"#members tr[data-peer="{peer}"]"#);
        assert_eq!(
            attr(&page, &css, "data-state").await.as_deref(),
            Some("alive")
        );
    }

    // A put through the page's form, then the record in the node's list.
    click(&page, "#tab-actions").await;
    fill(&page, "#put-key", "from-the-dashboard").await;
    fill(&page, "#put-value", "a value typed into the page").await;
    click(&page, "#put-submit").await;
    let stored = until("the put's result", PAGE_LIMIT, || async {
        text(&page, "#put-result")
            .await
            .filter(|t| t.contains("stored"))
    })
    .await;
    println!("put through the page: {stored}");
    click(&page, "#tab-records").await;
    until("the record listed", PAGE_LIMIT, || async {
        page.find(Locator::Css(
            r#"#records tr[data-key="from-the-dashboard"]"#,
        ))
        .await
        .ok()
    })
    .await;

    // A key over the limit: the page shows the node's own error text.
    let long_key = "k".repeat(600);
    let expected = match call(
        &nodes[0].url,
        "dht_put",
        json!({ "key": long_key, "value": "v" }),
    )
    .await
    {
        Err(jsonrpsee::core::ClientError::Call(e)) => e.message().to_owned(),
        other => panic!("a key of 600 bytes must be refused: {other:?}"),
    };
    click(&page, "#tab-actions").await;
    fill(&page, "#put-key", &long_key).await;
    click(&page, "#put-submit").await;
    let shown = until("the error shown", PAGE_LIMIT, || async {
        text(&page, "#put-error").await.filter(|t| !t.is_empty())
    })
    .await;
    assert!(shown.contains(&expected), "{shown:?} shows {expected:?}");

    for view in [
        "node", "routing", "records", "traffic", "actions", "members",
    ] {
        shoot(&page, view, &shots).await;
    }

    // Node 3 killed: suspect, then dead, as the changes stream in.
    signal(nodes[2].pid, "KILL");
    let killed = Instant::now();
    let row = format!(r#"#members tr[data-peer="{}"]"#, nodes[2].peer);
    until("node 3 dead on the page", PAGE_LIMIT, || async {
        (attr(&page, &row, "data-state").await.as_deref() == Some("dead")).then_some(())
    })
    .await;
    let dead_after = killed.elapsed();
    let trail = attr(&page, &row, "data-trail").await.unwrap_or_default();
    let states: Vec<&str> = trail.split_whitespace().collect();
    let suspect = states.iter().position(|s| *s == "suspect");
    let dead = states.iter().rposition(|s| *s == "dead");
    assert!(
        matches!((suspect, dead), (Some(s), Some(d)) if s < d),
        "node 3 went suspect, then dead: {trail:?}"
    );
    println!("node 3 dead on the page {dead_after:.1?} after SIGKILL (states seen: {trail})");
    let mark = page
        .execute("return window.shoalTestMark;", vec![])
        .await
        .expect("script runs");
    assert_eq!(mark, json!(42), "the page was not reloaded");
    let png = page.screenshot().await.expect("a screenshot");
    std::fs::write(shots.join("members-node3-dead.png"), png).expect("screenshot saved");
    let bytes_in = attr(&page, "#wire", "data-bytes-in")
        .await
        .unwrap_or_default();
    println!(
        "the page received {bytes_in} bytes over its socket; screenshots in {}",
        shots.display()
    );

    // A narrow screen: every view fits its width (tables scroll inside their own boxes).
    page.set_window_size(420, 800)
        .await
        .expect("a narrow window");
    for view in [
        "node", "members", "routing", "records", "traffic", "actions",
    ] {
        click(&page, &format!("#tab-{view}")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let overflow = page
            .execute(
                "return document.documentElement.scrollWidth - window.innerWidth;",
                vec![],
            )
            .await
            .expect("script runs");
        assert!(
            overflow.as_i64().is_some_and(|o| o <= 0),
            "the {view} view is {overflow} px wider than a narrow screen"
        );
    }
    let png = page.screenshot().await.expect("a screenshot");
    std::fs::write(shots.join("narrow-actions.png"), png).expect("screenshot saved");

    page.close().await.expect("browser session closed");
    let status = interrupt(testnet).await;
    assert!(status.success(), "testnet exits cleanly: {status}");
}
