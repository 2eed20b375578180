import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../src/errors.js';
import { browserStorageKind, openBrowserTier } from '../src/store/browser-tier.js';

describe('browser tier (the parts Node can run; OPFS and IndexedDB themselves are tested in a browser)', () => {
  it('picks OPFS where navigator.storage.getDirectory exists, else IndexedDB, else nothing', () => {
    const getDirectory = async (): Promise<unknown> => null;
    expect(browserStorageKind({ navigator: { storage: { getDirectory } }, indexedDB: {} })).toBe('opfs');
    expect(browserStorageKind({ navigator: { storage: {} }, indexedDB: {} })).toBe('indexeddb');
    expect(browserStorageKind({ navigator: {}, indexedDB: {} })).toBe('indexeddb');
    expect(browserStorageKind({ navigator: { storage: { getDirectory: 'not a function' } } })).toBeNull();
    expect(browserStorageKind({})).toBeNull();
  });

  it('says what to do where neither exists (Node)', async () => {
    await expect(openBrowserTier()).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});
