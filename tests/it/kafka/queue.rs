//! The Kafka queue itself: at least once, never committing past an unacked message.

use std::time::Duration;

use futures_util::StreamExt;
use upload_gateway::config::KafkaSettings;
use upload_gateway::queue::kafka::KafkaQueue;
use upload_gateway::queue::{Message, Queue, Subscription};

use super::support::*;

fn msg(topic: &str, key: &str) -> Message {
    Message {
        topic: topic.into(),
        key: key.into(),
        headers: vec![("h".into(), format!("header of {key}"))],
        payload: format!(r#"{{"key":"{key}"}}"#).into_bytes().into(),
    }
}

async fn next_key(sub: &mut Subscription) -> (String, upload_gateway::queue::Delivery) {
    let d = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("a message within 30 s")
        .expect("the subscription goes on")
        .expect("no queue error");
    (d.message.key.clone(), d)
}

/// A Kafka queue on the shared broker, and `topic` made with this many partitions.
async fn queue_with_topic(topic: &str, partitions: i32) -> KafkaQueue {
    let settings = KafkaSettings {
        brokers: brokers(),
        partitions,
        replication: -1,
        publish_timeout: Duration::from_secs(10),
        quarantine_sweep: Duration::from_secs(60),
        options: vec![],
    };
    let q = KafkaQueue::new(&settings, topic).unwrap();
    q.ensure_topics(&[topic.to_string()], Duration::from_secs(10)).await.unwrap();
    q
}

#[tokio::test]
async fn an_unacked_delivery_comes_back_and_nothing_past_it_is_committed() {
    let _broker = BROKER.read().await;
    let n = Names::new("queue");
    let topic = n.validation.clone();
    let q = queue_with_topic(&topic, 1).await;
    for k in ["k1", "k2", "k3"] {
        q.publish(msg(&topic, k)).await.unwrap();
    }
    let group = format!("{}.q", n.group);

    let mut sub = q.subscribe(&topic, &group).await.unwrap();
    let (k1, d1) = next_key(&mut sub).await;
    let (k2, d2) = next_key(&mut sub).await;
    let (k3, d3) = next_key(&mut sub).await;
    assert_eq!((k1.as_str(), k2.as_str(), k3.as_str()), ("k1", "k2", "k3"));
    assert_eq!(d1.message.header("h"), Some("header of k1"));
    d3.ack();
    d2.ack();
    drop(d1); // not acked: given out again, before anything new
    let (again, d1) = next_key(&mut sub).await;
    assert_eq!(again, "k1");
    // A window for a wrong commit past k1 (nothing marks that the commit loop ran;
    // the new member below would start past k1 if it had committed).
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(d1);
    drop(sub); // the member leaves its group; k1 was never acked
    wait_group_empty(&group, Duration::from_secs(30)).await;

    // A new member starts at the committed offset: k1 and everything after it.
    let mut sub = q.subscribe(&topic, &group).await.unwrap();
    let mut keys = Vec::new();
    for _ in 0..3 {
        let (k, d) = next_key(&mut sub).await;
        keys.push(k);
        d.ack();
    }
    assert_eq!(keys, ["k1", "k2", "k3"]);
    wait_committed_to_end(&topic, &group, Duration::from_secs(30)).await;
    drop(sub);
    wait_group_empty(&group, Duration::from_secs(30)).await;

    // Everything acked is committed: a new member gets only what is new.
    q.publish(msg(&topic, "k4")).await.unwrap();
    let mut sub = q.subscribe(&topic, &group).await.unwrap();
    let (k, d) = next_key(&mut sub).await;
    assert_eq!(k, "k4");
    d.ack();
    assert!(q.check().await.is_ok());
    drop(sub);
    n.cleanup().await;
}

/// The look a verdict applied again makes (did a replica that died publish the
/// payload's `available`?), on the real broker: a key written within the window is
/// found, on any of the topic's partitions; one never written is not; one written
/// before the window is not.
#[tokio::test]
async fn a_key_written_lately_is_found_and_one_written_before_is_not() {
    let _broker = BROKER.read().await;
    let n = Names::new("lookup");
    let topic = n.validation.clone();
    let q = queue_with_topic(&topic, 4).await;
    q.publish(msg(&topic, "early")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..20 {
        q.publish(msg(&topic, &format!("late-{i}"))).await.unwrap();
    }
    let minute = Duration::from_secs(60);
    for i in [0, 7, 19] {
        assert!(q.written_since(&topic, &format!("late-{i}"), minute).await.unwrap(), "late-{i} written within the minute");
    }
    assert!(q.written_since(&topic, "early", minute).await.unwrap(), "early, within the minute");
    assert!(!q.written_since(&topic, "early", Duration::from_secs(2)).await.unwrap(), "early, 3 s ago, not within 2 s");
    assert!(!q.written_since(&topic, "never", minute).await.unwrap(), "a key never written");
    n.cleanup().await;
}
