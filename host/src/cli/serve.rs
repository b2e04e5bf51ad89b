//! `tt serve` (the townhall: REST, events, metrics, MCP over HTTP, the dashboard), `tt mcp`
//! (MCP over stdio) and `tt auth key add|list|revoke` (the keys both require).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::print::{format_ms, print_json, Json};
use crate::serve::{self, ServeOptions};
use crate::town::auth::Scope;
use crate::town::Town;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// HOST:PORT to listen on (default [serve] bind, else 127.0.0.1:7070; port 0 picks one).
    #[arg(long)]
    pub bind: Option<String>,
    /// PEM certificate chain: with --tls-key, serve HTTPS only.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address (a proxy in front terminates TLS).
    #[arg(long)]
    pub insecure_http: bool,
}

#[derive(Args, Debug)]
pub struct McpArgs {
    /// The API key (default: the TT_API_KEY environment variable); its scope limits the tools.
    #[arg(long, env = "TT_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
}

#[derive(Args, Debug)]
pub struct AuthArgs {
    #[command(subcommand)]
    pub command: AuthCommand,
}

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// API keys for `tt serve` and `tt mcp`.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Make a key; its token is printed once and only its hash is kept.
    Add {
        /// Who or what uses it (1-64 of A-Za-z0-9-_).
        name: String,
        /// read, write or manage (each includes the ones before it).
        #[arg(long, default_value = "read")]
        scope: String,
        #[command(flatten)]
        json: Json,
    },
    List {
        #[command(flatten)]
        json: Json,
    },
    /// Revoke a key by its id; requests with it are refused from then on.
    Revoke { id: String },
}

pub async fn serve(town: Town, args: ServeArgs) -> Result<()> {
    serve::run(
        town,
        ServeOptions {
            bind: args.bind,
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
            insecure_http: args.insecure_http,
        },
    )
    .await
}

pub async fn mcp(town: Town, args: McpArgs) -> Result<()> {
    serve::mcp::stdio(town, args.key.as_deref()).await
}

pub async fn auth(town: &Town, args: AuthArgs) -> Result<()> {
    let AuthCommand::Key(command) = args.command;
    match command {
        KeyCommand::Add { name, scope, json } => {
            let k = town.key_add(&name, Scope::parse(&scope)?).await?;
            if json.json {
                return print_json(&k);
            }
            println!("key {} ({}, scope {})", k.key.id, k.key.name, k.key.scope);
            println!("{}", k.token);
            eprintln!("This is the only time the key is shown; keep it secret.");
        }
        KeyCommand::List { json } => {
            let keys = town.keys().await?;
            if json.json {
                return print_json(&keys);
            }
            if keys.is_empty() {
                println!("no API keys (`tt auth key add NAME --scope read|write|manage`)");
            }
            for k in keys {
                println!(
                    "{}  {:<20} {:<7} created {}",
                    k.id,
                    k.name,
                    k.scope,
                    format_ms(k.created)
                );
            }
        }
        KeyCommand::Revoke { id } => {
            town.key_revoke(&id).await?;
            println!("revoked key {id}");
        }
    }
    Ok(())
}
