//! The worker on a three-node NATS cluster, the events stream and its consumer at three
//! replicas (R3): what a pull delivers is stored once, whichever way the pull ends.

use crate::encodings::{
    QuietPulls, metric, padded_events, publish_batch, publish_single, stored, wait_drained,
};
use testkit::{Platform, events};

#[tokio::test]
async fn on_an_r3_cluster_every_message_a_pull_delivers_is_stored_the_first_time() {
    let p = Platform::builder()
        .worker_binary(env!("CARGO_BIN_EXE_worker"))
        .nats_cluster(3)
        .start()
        .await
        .unwrap();
    p.create_stream().await.unwrap();
    // A backlog the worker's pulls (250 events each) end on in both ways: 1,500
    // single-event messages (a pull's count is reached with bytes to spare: `409 Batch
    // Completed`), then 40 messages of 100 events of ~700 bytes, 2.8 MB (a pull sized for
    // single events reaches its byte limit: `409 Message Size Exceeds MaxBytes`). A
    // replicated consumer sends those statuses before the pull's last messages.
    let singles = events("single", 0..1500);
    for event in &singles {
        publish_single(&p, event).await;
    }
    let batched = padded_events("batched", 4000, 600);
    for chunk in batched.chunks(100) {
        publish_batch(&p, chunk, &[], None).await;
    }
    let messages = 1500 + 40;

    let worker = QuietPulls::start(&p, &[("WORKER_BATCH_SIZE", "250")]);
    let port = worker.port;
    p.wait_rows(5500).await.unwrap();
    wait_drained(&p).await;
    assert_eq!(stored(&p).await, (5500, 5500));

    // Each message was delivered once: none was dropped by a pull and redelivered after
    // `ack_wait` (or, after enough rounds, dead-lettered though it was never tried).
    let mut received = 0.0;
    for encoding in ["single", "batch/1"] {
        let series = format!(r#"worker_messages_received_total{{encoding="{encoding}"}}"#);
        received += metric(&p, port, &series).await;
    }
    assert_eq!(received, messages as f64, "messages received");
    let js = p.js().await.unwrap();
    let mut dlq = js.get_stream(&p.names.dlq).await.unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, 0, "dead letters");
    worker.assert_quiet("a pull ending at its count or its byte limit is no failure");
}
