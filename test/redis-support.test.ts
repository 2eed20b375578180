// The server-free parts of the Redis tier: the circuit breaker on a fake clock, Redis Cluster's key slot, the key
// layout and credential redaction.
import { describe, expect, it } from 'vitest';
import { CircuitBreaker, clusterSlot, groupedKey, redact, redactUrl, redisKeyOf, tierKeyOf, urlSecrets } from '../src/node/redis-support.js';

describe('CircuitBreaker', () => {
  it('opens after the threshold of consecutive failures, lets one probe through after openMs, closes on its success', () => {
    let now = 0;
    const breaker = new CircuitBreaker(3, 1000, () => now);
    breaker.failure();
    breaker.failure();
    breaker.success(); // not consecutive: starts over
    breaker.failure();
    breaker.failure();
    expect(breaker.state).toBe('closed');
    breaker.failure();
    expect(breaker.state).toBe('open');
    expect(breaker.allow()).toBe(false);
    expect(breaker.wouldAllow()).toBe(false);
    now = 999;
    expect(breaker.allow()).toBe(false);
    now = 1000;
    expect(breaker.wouldAllow()).toBe(true);
    expect(breaker.allow()).toBe(true); // the probe
    expect(breaker.allow()).toBe(false); // only one
    expect(breaker.state).toBe('half-open');
    breaker.success();
    expect(breaker.state).toBe('closed');
    expect(breaker.opens).toBe(1);
  });

  it('a failed probe opens it again for another openMs', () => {
    let now = 0;
    const breaker = new CircuitBreaker(1, 500, () => now);
    breaker.failure();
    now = 500;
    expect(breaker.allow()).toBe(true);
    breaker.failure();
    expect(breaker.opens).toBe(2);
    now = 999;
    expect(breaker.allow()).toBe(false);
    now = 1000;
    expect(breaker.allow()).toBe(true);
  });
});

describe('clusterSlot', () => {
  it('is CRC16/XMODEM mod 16384, as CLUSTER KEYSLOT', () => {
    expect(clusterSlot('123456789')).toBe(0x31c3); // the CRC's check value
    expect(clusterSlot('foo')).toBe(12182); // Redis documentation
    expect(clusterSlot('{user1000}.following')).toBe(clusterSlot('{user1000}.followers'));
    expect(clusterSlot('{}foo')).toBe(clusterSlot('{}foo')); // an empty tag hashes the whole key
    expect(clusterSlot('{}foo')).not.toBe(clusterSlot(''));
  });
});

describe('key layout', () => {
  it('puts a group in one slot and maps Redis keys back to tier keys', () => {
    const group = 'ab'.repeat(32);
    const a = groupedKey(group, '11'.repeat(32));
    const b = groupedKey(group, '22'.repeat(32));
    expect(redisKeyOf('kvc', a)).toBe(`kvc:{${group.slice(0, 16)}}:${a}`);
    expect(clusterSlot(redisKeyOf('kvc', a))).toBe(clusterSlot(redisKeyOf('kvc', b)));
    expect(tierKeyOf('kvc', redisKeyOf('kvc', a))).toBe(a);
    expect(tierKeyOf('kvc', 'other:thing')).toBeNull();
    expect(redisKeyOf('kvc', 'plain-key')).toBe('kvc:{plain-key}:plain-key');
    expect(redisKeyOf('kvc', '{evil}x')).toBe('kvc:{_evil_x}:{evil}x'); // a key cannot pick its tag
    expect(() => groupedKey('a/b', 'k')).toThrow(/group/);
    expect(() => groupedKey('', 'k')).toThrow(/group/);
  });
});

describe('redaction', () => {
  it('hides users and passwords of URLs and any secret in messages', () => {
    expect(redactUrl('redis://app:s3cr%40t@host:6379/2')).toBe('redis://***:***@host:6379/2');
    expect(redactUrl('rediss://:only-pass@host:6380')).toBe('rediss://:***@host:6380');
    expect(redactUrl('redis://host:6379')).toBe('redis://host:6379');
    expect(urlSecrets('redis://app:s3cr%40t@host')).toEqual(['s3cr%40t', 's3cr@t']);
    expect(redact('failed redis://app:s3cr@t@host: WRONGPASS for s3cr@t', ['s3cr@t'])).not.toContain('s3cr@t');
  });
});
