//! Server-generated names (`amq.gen-…` queues, `amq.ctag-…` consumer tags).

use amqp::ShortStr;
use rand::Rng;

const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// `prefix` followed by 22 random URL-safe base64 characters (128 bits), as RabbitMQ does.
pub fn generate_name(prefix: &str) -> ShortStr {
    let mut rng = rand::thread_rng();
    let mut name = String::with_capacity(prefix.len() + 22);
    name.push_str(prefix);
    for _ in 0..22 {
        name.push(URL_SAFE[rng.gen_range(0..64)] as char);
    }
    ShortStr::new(name).unwrap_or_default()
}
