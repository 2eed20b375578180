// The demo page (filled in by the demo issue).
export {};
