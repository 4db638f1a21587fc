// Entry of the report's three.js bundle (built by tools/install_clients.sh with esbuild into
// .cache/clients/viewer/three_bundle.js as the global `HeadforgeThree`). Only re-exports: three.js
// (MIT, https://threejs.org) and the two example modules the report's viewer uses.
export * from "three";
export { GLTFLoader } from "three/examples/jsm/loaders/GLTFLoader.js";
export { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
