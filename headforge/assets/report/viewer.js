// The interactive 3D view of a headforge report page (headforge/assets/report/viewer.js, part of headforge).
//
// The page holds the GLB as base64 in <script id="hf-glb">, its settings in <script id="hf-viewer-config">,
// then three.js (inlined bundle or CDN import map), then this file, then one call:
//     startHeadforgeViewer(loadThree)   // loadThree() -> Promise of three's exports + GLTFLoader + OrbitControls
// It draws the model with orbit controls, one slider per morph target (the names GLTFLoader maps from the
// mesh's extras.targetNames into mesh.morphTargetDictionary), one button per glTF animation (AnimationMixer)
// and a reset button. It renders on demand (orbiting, a slider, a playing clip), never in an idle loop.
//
// Test hook: window.headforgeViewer = {ready, targetNames, clipNames, setWeight, weight, influence, playClip,
// stopClip, reset, project, projectMeshPoints, camera, renderCount, revision, readyMs};
// document.body.dataset.viewerState is "loading", then "ready" or "error:<message>". The page's own sliders call
// the same setWeight.
"use strict";

(function () {
  const body = document.body;
  const byId = (id) => document.getElementById(id);
  const config = JSON.parse(byId("hf-viewer-config").textContent);
  let resolveReady, rejectReady;
  const ready = new Promise((resolve, reject) => { resolveReady = resolve; rejectReady = reject; });
  ready.catch(() => {});  // a failure is reported once, by fail(); the promise still rejects for its callers

  const hook = { ready, targetNames: [], clipNames: [], renderCount: 0, revision: null };
  window.headforgeViewer = hook;

  function status(text) { byId("hf-status").textContent = text; }

  let failed = false;
  function fail(error) {
    if (failed) return;
    failed = true;
    const message = (error && error.message) || String(error);
    body.dataset.viewerState = "error:" + message;
    status("could not show " + config.glbName + ": " + message);
    console.error("headforge viewer: " + message);
    rejectReady(error instanceof Error ? error : new Error(message));
  }
  window.addEventListener("error", (event) => {
    if (body.dataset.viewerState === "loading") fail(event.error || event.message);
  });
  window.addEventListener("unhandledrejection", (event) => {
    if (body.dataset.viewerState === "loading") fail(event.reason);
  });

  async function decodeGlb() {
    const text = byId("hf-glb").textContent.trim();
    const response = await fetch("data:model/gltf-binary;base64," + text);
    const buffer = await response.arrayBuffer();
    if (buffer.byteLength !== config.glbBytes) {
      throw new Error(`the embedded GLB decoded to ${buffer.byteLength} bytes, expected ${config.glbBytes}`);
    }
    return buffer;
  }

  function parseGlb(THREE, buffer) {
    return new Promise((resolve, reject) => new THREE.GLTFLoader().parse(buffer, "", resolve, reject));
  }

  // ------------------------------------------------------------------------------------------- the view
  function build(THREE, gltf) {
    const canvas = byId("hf-canvas");
    const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
    renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    const scene = new THREE.Scene();
    scene.background = new THREE.Color(0xdfe3e8);
    scene.add(new THREE.HemisphereLight(0xffffff, 0x8a8f99, 1.5));
    const camera = new THREE.PerspectiveCamera(30, 1, 0.01, 100);
    const keyLight = new THREE.DirectionalLight(0xffffff, 1.8);  // follows the camera: a head light
    keyLight.position.set(0.4, 0.5, 0);
    camera.add(keyLight, keyLight.target);
    keyLight.target.position.set(0, 0, -1);
    scene.add(camera);

    const root = gltf.scene;
    scene.add(root);
    root.updateMatrixWorld(true);

    // frame the model from its front (+Z, glTF's forward), filling the view
    const box = new THREE.Box3().setFromObject(root);
    if (box.isEmpty()) throw new Error(`${config.glbName} has nothing to draw (no mesh or points in its scene)`);
    const center = box.getCenter(new THREE.Vector3());
    const radius = Math.max(box.getSize(new THREE.Vector3()).length() / 2, 1e-6);
    const distance = radius / Math.sin(THREE.MathUtils.degToRad(camera.fov / 2)) * 0.9;
    camera.near = distance / 100;
    camera.far = distance * 100;
    const home = { position: center.clone().add(new THREE.Vector3(0, 0, distance)), target: center.clone() };
    const controls = new THREE.OrbitControls(camera, canvas);

    function render() {
      renderer.render(scene, camera);
      hook.renderCount += 1;
    }
    controls.addEventListener("change", render);

    function resize() {
      const width = canvas.clientWidth, height = canvas.clientHeight;
      if (!width || !height) return;
      renderer.setSize(width, height, false);
      camera.aspect = width / height;
      camera.updateProjectionMatrix();
      render();
    }
    new ResizeObserver(resize).observe(canvas);

    // ----------------------------------------------------------------------------------- morph targets
    const morphMeshes = [];
    root.traverse((o) => { if (o.morphTargetDictionary && o.morphTargetInfluences) morphMeshes.push(o); });
    const names = [];
    const defaults = new Map();
    for (const mesh of morphMeshes) {
      const entries = Object.entries(mesh.morphTargetDictionary).sort((a, b) => a[1] - b[1]);
      for (const [name, index] of entries) {
        if (!defaults.has(name)) { names.push(name); defaults.set(name, mesh.morphTargetInfluences[index]); }
      }
    }
    const weights = new Map(defaults);
    const sliders = new Map();

    function applyWeight(name) {
      const w = weights.get(name);
      for (const mesh of morphMeshes) {
        const index = mesh.morphTargetDictionary[name];
        if (index !== undefined) mesh.morphTargetInfluences[index] = w;
      }
    }

    function showWeight(name, w) {
      const row = sliders.get(name);
      row.input.value = String(w);
      row.output.textContent = w.toFixed(2);
    }

    function setWeight(name, w) {
      if (!weights.has(name)) throw new Error(`no morph target named ${JSON.stringify(name)}`);
      const value = Math.min(1, Math.max(0, Number(w)));
      if (!Number.isFinite(value)) throw new Error(`weight of ${name} must be a number, got ${w}`);
      weights.set(name, value);
      applyWeight(name);
      showWeight(name, value);
      render();
    }

    function influence(name) {  // what the mesh shows now (a playing clip drives it)
      for (const mesh of morphMeshes) {
        const index = mesh.morphTargetDictionary[name];
        if (index !== undefined) return mesh.morphTargetInfluences[index];
      }
      throw new Error(`no morph target named ${JSON.stringify(name)}`);
    }

    const sliderBox = byId("hf-sliders");
    names.forEach((name, i) => {
      const row = document.createElement("label");
      row.className = "slider";
      row.dataset.target = name;
      const label = document.createElement("span");
      label.textContent = name;
      label.title = name;
      const input = document.createElement("input");
      Object.assign(input, { type: "range", min: "0", max: "1", step: "0.01", id: "hf-w-" + i });
      input.dataset.target = name;
      const output = document.createElement("output");
      row.append(label, input, output);
      sliderBox.append(row);
      sliders.set(name, { row, input, output });
      showWeight(name, weights.get(name));
      input.addEventListener("input", () => { stopClip(); setWeight(name, parseFloat(input.value)); });
    });
    byId("hf-target-count").textContent = `(${names.length})`;
    if (!names.length) sliderBox.textContent = "This model has no morph targets.";
    byId("hf-filter").addEventListener("input", (event) => {
      const needle = event.target.value.toLowerCase();
      for (const [name, { row }] of sliders) row.hidden = !name.toLowerCase().includes(needle);
    });

    // ------------------------------------------------------------------------------------------ clips
    const mixer = new THREE.AnimationMixer(root);
    const clips = new Map(gltf.animations.map((clip, i) => [clip.name || `clip ${i}`, clip]));
    const clipButtons = new Map();
    let playing = null, lastTime = 0;

    function tick(now) {
      if (!playing) return;
      mixer.update(Math.max(0, now - lastTime) / 1000);
      lastTime = now;
      for (const name of names) {
        const row = sliders.get(name);
        const w = influence(name);
        row.input.value = String(w);
        row.output.textContent = w.toFixed(2);
      }
      render();
      requestAnimationFrame(tick);
    }

    function playClip(name) {
      const clip = clips.get(name);
      if (!clip) throw new Error(`no clip named ${JSON.stringify(name)}`);
      stopClip();
      playing = mixer.clipAction(clip).reset().setLoop(THREE.LoopRepeat, Infinity).play();
      clipButtons.get(name).setAttribute("aria-pressed", "true");
      byId("hf-stop").disabled = false;
      lastTime = performance.now();
      mixer.update(0);
      render();
      requestAnimationFrame(tick);
    }

    function stopClip() {
      if (!playing) return;
      playing.stop();  // the mixer puts back what it animated; the sliders' weights then apply again
      playing = null;
      for (const button of clipButtons.values()) button.setAttribute("aria-pressed", "false");
      byId("hf-stop").disabled = true;
      for (const name of names) { applyWeight(name); showWeight(name, weights.get(name)); }
      render();
    }

    const clipBox = byId("hf-clips");
    for (const [name, clip] of clips) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = `\u25b6 ${name} (${clip.duration.toFixed(1)} s)`;
      button.dataset.clip = name;
      button.setAttribute("aria-pressed", "false");
      button.addEventListener("click", () => playClip(name));
      clipButtons.set(name, button);
      clipBox.append(button);
    }
    if (!clips.size) clipBox.textContent = "This model has no animations.";
    byId("hf-stop").addEventListener("click", stopClip);

    // ------------------------------------------------------------------------------------------ reset
    function reset() {
      stopClip();
      for (const name of names) {
        weights.set(name, defaults.get(name));
        applyWeight(name);
        showWeight(name, defaults.get(name));
      }
      camera.position.copy(home.position);
      controls.target.copy(home.target);
      camera.lookAt(home.target);
      controls.update();
      render();
    }
    byId("hf-reset").addEventListener("click", reset);

    // --------------------------------------------------------------------------------- projection (tests)
    function toCanvas(v) {
      const p = v.project(camera);
      return [(p.x + 1) / 2 * canvas.clientWidth, (1 - p.y) / 2 * canvas.clientHeight, p.z];
    }
    const project = (points) => points.map((q) => toCanvas(new THREE.Vector3(q[0], q[1], q[2])));
    // mesh-local points of the (first) mesh holding targetName, under the glTF node named nodeName if given
    function projectMeshPoints(targetName, points, nodeName) {
      const under = nodeName === undefined ? root : root.getObjectByName(nodeName);
      if (!under) throw new Error(`no node named ${JSON.stringify(nodeName)}`);
      const inside = (o) => { for (; o; o = o.parent) if (o === under) return true; return false; };
      const mesh = morphMeshes.find((m) => m.morphTargetDictionary[targetName] !== undefined && inside(m));
      const where = nodeName || "the scene";
      if (!mesh) throw new Error(`no morph target named ${JSON.stringify(targetName)} under ${where}`);
      mesh.updateMatrixWorld(true);
      return points.map((q) => toCanvas(new THREE.Vector3(q[0], q[1], q[2]).applyMatrix4(mesh.matrixWorld)));
    }

    Object.assign(hook, { targetNames: names.slice(), clipNames: [...clips.keys()], setWeight,
                          weight: (name) => weights.get(name), influence, playClip, stopClip, reset, project,
                          projectMeshPoints, camera,
                          revision: THREE.REVISION });
    reset();
    resize();
    let vertices = 0;
    root.traverse((o) => {
      if (o.geometry && o.geometry.attributes.position) vertices += o.geometry.attributes.position.count;
    });
    const count = (n, one, many) => `${n.toLocaleString("en")} ${n === 1 ? one : many}`;
    status(`${config.glbName}: ${count(vertices, "vertex", "vertices")}, ` +
           `${count(names.length, "morph target", "morph targets")}, ${count(clips.size, "clip", "clips")} ` +
           "\u2014 drag to orbit, wheel to zoom, right-drag to pan");
    byId("hf-viewer-source").textContent += ` (running three.js r${THREE.REVISION})`;
    hook.readyMs = performance.now();  // since the page started loading
    body.dataset.viewerState = "ready";
    resolveReady(hook);
  }

  window.startHeadforgeViewer = function (loadThree) {
    loadThree()
      .then(async (THREE) => {
        if (!THREE || !THREE.GLTFLoader || !THREE.OrbitControls) throw new Error("three.js did not load");
        build(THREE, await parseGlb(THREE, await decodeGlb()));
      })
      .catch(fail);
  };
})();
