//! The Rust client's trace context, end to end (docs/reference.md §7): an application span of an
//! OpenTelemetry tracer in this process, the client's `#[instrument]` span under it, and the
//! spans the server exports over OTLP to a real receiver under that: the same trace id, and the
//! server's root span a child of the client's span. The client sends the context as a
//! sqlcommenter `traceparent` comment (feature `opentelemetry` of event_store_client), on a
//! named-statement client and a pooler-safe one alike.

use event_store_client::{ClientOptions, EventStoreClient, ExpectedVersion};
use event_store_client_tests::otlp::{Receiver, TraceCluster, named, trace_port};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use std::path::Path;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

const RECEIVER: &str = env!("CARGO_BIN_EXE_otlp_receiver");
const DB: &str = "es_client_traceparent";

/// The one span of this process named `name`.
fn local<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "one span {name} among {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    found[0]
}

#[test]
fn the_servers_spans_join_the_applications_trace() {
    let rx = Receiver::start(RECEIVER, "ok", 0);
    let cluster = TraceCluster::start(&format!(
        "es.otlp_endpoint = '{}'\nes.otlp_interval = 100\nes.otlp_timeout = 1000\n",
        rx.endpoint()
    ));
    drop(cluster.database(DB));
    let socket = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/es-cluster-tracing/run");
    let url = format!(
        "postgres://postgres@localhost:{}/{DB}?host={}",
        trace_port(),
        socket
            .canonicalize()
            .expect("the tracing cluster's socket directory")
            .display()
    );

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("app")));
    // This thread's subscriber: the runtime below polls every future on this thread.
    let _subscriber = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");

    for pooler_safe in [false, true] {
        exporter.reset();
        let stream = uuid::Uuid::new_v4();
        runtime.block_on(async {
            let pool = sqlx::PgPool::connect(&url).await.expect("connect");
            let store = EventStoreClient::with_options(
                pool,
                ClientOptions::default().pooler_safe(pooler_safe),
            );
            let request = tracing::info_span!("app.request");
            async {
                store
                    .append(
                        stream,
                        ExpectedVersion::NoStream,
                        &[serde_json::json!({"type": "ItemAdded"})],
                    )
                    .await
                    .expect("append");
            }
            .instrument(request)
            .await;
            store.pool().close().await;
        });
        let _ = provider.force_flush();
        let spans = exporter.get_finished_spans().expect("the exported spans");
        let app = local(&spans, "app.request");
        let client = local(&spans, "event_store_client.append");
        assert_eq!(client.span_context.trace_id(), app.span_context.trace_id());
        assert_eq!(
            client.parent_span_id,
            app.span_context.span_id(),
            "the client's span is the app's child"
        );
        let trace = app.span_context.trace_id().to_string();

        // The server's spans, exported by its worker to the receiver: same trace, and the
        // server's root span is a child of the client's span.
        let server = rx.wait_trace(&trace, |s| {
            s.iter().any(|s| s["name"] == "event_store.append_events")
        });
        let append = named(&server, "event_store.append_events");
        assert_eq!(append["trace_id"], trace.as_str());
        assert_eq!(
            append["parent_span_id"],
            client.span_context.span_id().to_string().as_str(),
            "pooler_safe = {pooler_safe}: the server's span is the client's child"
        );
    }
    cluster.stop();
}
