/** WGSL shader sources are imported as text by esbuild and vitest (house rule 1). */
declare module '*.wgsl' {
  const source: string;
  export default source;
}
