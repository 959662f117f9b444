import { defineConfig } from "vite";

// Tauri expects a fixed dev port and a build into dist/ that it embeds.
export default defineConfig({
  clearScreen: false,
  // The tests also read the repository's docs (errors.test.ts checks billing's error table).
  server: { port: 5173, strictPort: true, fs: { allow: [".", "../../docs"] } },
  build: { target: "es2021", outDir: "dist", emptyOutDir: true, sourcemap: false },
  test: { environment: "node", include: ["src/**/*.test.ts"] },
});
