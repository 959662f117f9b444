// Text files imported whole (`?raw`, a Vite feature): the tests read docs this way.
declare module "*?raw" {
  const text: string;
  export default text;
}
