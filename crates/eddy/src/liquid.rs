//! `eddy liquid`: render a Braze template offline (variables and a user from files) or through a
//! running eddy, and check templates for syntax errors in a team's CI.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use eddy_liquid::http::{HttpClient, Rules};
use eddy_liquid::{Limits, Object, Rendered, Template, Value};
use serde_json::json;

#[derive(Args)]
pub struct LiquidArgs {
    #[command(subcommand)]
    command: LiquidCommand,
}

#[derive(Subcommand)]
enum LiquidCommand {
    /// Render a template; prints the output, or the abort reason on stderr (exit 3).
    Render {
        /// The template file.
        template: PathBuf,
        /// A JSON object of top-level variables (`api_trigger_properties`, `event_properties`…).
        #[arg(long)]
        vars: Option<PathBuf>,
        /// Offline: a user as `/users/export/ids` answers it. With --url: an identifier object
        /// (`{"external_id": "…"}`, `{"user_alias": {…}}`, `{"braze_id": "…"}`, `{"email": "…"}`).
        #[arg(long)]
        user: Option<PathBuf>,
        /// Render through the running eddy at this URL (its Connected Content rules and stored
        /// users). Only given on the command line: `EDDY_URL`, which the admin commands read,
        /// does not turn an offline render into a remote one.
        #[arg(long)]
        url: Option<String>,
        /// The admin token of that eddy.
        #[arg(long, env = "EDDY_ADMIN_TOKEN")]
        key: Option<String>,
        /// The workspace, with --url.
        #[arg(long, default_value = "default")]
        workspace: String,
        /// Offline: hosts Connected Content may call besides public ones (repeatable).
        #[arg(long = "allow-host")]
        allow_hosts: Vec<String>,
    },
    /// Report every syntax error of the given templates as FILE:LINE: message; exit 1 if any.
    Check {
        /// Template files.
        #[arg(required = true)]
        templates: Vec<PathBuf>,
    },
}

/// Runs `eddy liquid …`; answers the process exit code.
pub async fn liquid(args: LiquidArgs) -> anyhow::Result<i32> {
    match args.command {
        LiquidCommand::Check { templates } => {
            let mut failed = false;
            for path in templates {
                let source = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                if let Err(e) = Template::parse(&source) {
                    println!("{}:{}: {}", path.display(), e.line, e.message);
                    failed = true;
                }
            }
            Ok(if failed { 1 } else { 0 })
        }
        LiquidCommand::Render {
            template,
            vars,
            user,
            url,
            key,
            workspace,
            allow_hosts,
        } => {
            let source = std::fs::read_to_string(&template)
                .with_context(|| format!("cannot read {}", template.display()))?;
            let vars = read_json(vars.as_ref())?;
            let user = read_json(user.as_ref())?;
            match url {
                Some(url) => remote(&url, key, &workspace, source, vars, user).await,
                None => local(&template, source, vars, user, allow_hosts).await,
            }
        }
    }
}

fn read_json(path: Option<&PathBuf>) -> anyhow::Result<Option<serde_json::Value>> {
    let Some(path) = path else { return Ok(None) };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    Ok(Some(value))
}

async fn local(
    path: &std::path::Path,
    source: String,
    vars: Option<serde_json::Value>,
    user: Option<serde_json::Value>,
    allowed_hosts: Vec<String>,
) -> anyhow::Result<i32> {
    let template = match Template::parse(&source) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}:{}: {}", path.display(), e.line, e.message);
            return Ok(1);
        }
    };
    let mut variables = match &user {
        Some(user) => eddy_liquid::user_variables(user),
        None => Object::default(),
    };
    match vars {
        Some(serde_json::Value::Object(map)) => {
            for (k, v) in map {
                variables.insert(k, Value::from_json(&v));
            }
        }
        Some(_) => bail!("--vars must hold a JSON object"),
        None => {}
    }
    let runtime = tokio::runtime::Handle::current();
    let rendered = tokio::task::spawn_blocking(move || {
        let http =
            HttpClient::new(runtime, Duration::from_millis(200)).map_err(anyhow::Error::msg)?;
        let rules = Rules {
            allowed_hosts: eddy_net::AllowedHosts::parse(&allowed_hosts)?,
            ..Rules::default()
        };
        let fetch = http.scoped("cli", &rules);
        template
            .render_report(&variables, Limits::default(), Some(&fetch), None)
            .map_err(|e| anyhow::anyhow!("{e}"))
    })
    .await??;
    for warning in &rendered.warnings {
        // Offline, the hosts Connected Content may call are this command's, not a workspace's.
        let warning = warning.replace(
            "add it to the workspace's allowed_hosts",
            "pass --allow-host to allow it",
        );
        let warning = warning.replace(
            "add the host to the workspace's allowed_hosts",
            "pass --allow-host to allow the host",
        );
        let warning = warning.replace(
            "unless the host is in the workspace's allowed_hosts",
            "unless the host is given with --allow-host",
        );
        eprintln!("warning: {warning}");
    }
    Ok(print_rendered(rendered.rendered))
}

fn print_rendered(rendered: Rendered) -> i32 {
    use std::io::Write;
    match rendered {
        Rendered::Output(text) => {
            let mut stdout = std::io::stdout();
            let _ = stdout.write_all(text.as_bytes());
            let _ = stdout.flush();
            0
        }
        Rendered::Aborted(reason) => {
            eprintln!("aborted: {reason}");
            3
        }
    }
}

async fn remote(
    url: &str,
    key: Option<String>,
    workspace: &str,
    template: String,
    vars: Option<serde_json::Value>,
    user: Option<serde_json::Value>,
) -> anyhow::Result<i32> {
    let key = key.context("--url needs --key (the admin token) or EDDY_ADMIN_TOKEN")?;
    let mut body = json!({"template": template});
    if let Some(vars) = vars {
        body["variables"] = vars;
    }
    if let Some(user) = user {
        body["user"] = user;
    }
    let endpoint = format!(
        "{}/eddy/v1/workspaces/{workspace}/liquid/render",
        url.trim_end_matches('/')
    );
    let response = reqwest::Client::new()
        .post(&endpoint)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    if status.as_u16() == 400 && answer.get("line").is_some() {
        eprintln!(
            "line {}: {}",
            answer["line"],
            answer["message"].as_str().unwrap_or_default()
        );
        return Ok(1);
    }
    if !status.is_success() {
        bail!("{status}: {answer}");
    }
    if answer["aborted"] == true {
        return Ok(print_rendered(Rendered::Aborted(
            answer["abort_reason"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )));
    }
    Ok(print_rendered(Rendered::Output(
        answer["output"].as_str().unwrap_or_default().to_string(),
    )))
}
