/* Face gallery 3D viewer: a textured triangle mesh drawn with plain WebGL 1, no library.
 *
 * The page provides, before this script: `window.FACE_MESH` (from the photo's mesh.js: base64
 * little-endian float32 positions (V x 3) and uvs (V x 2, v up), uint32 triangle indices, and the
 * texture as a data: URI, so nothing is fetched: it works from file:// where images read from
 * disk would taint WebGL) and a <canvas id="viewer" data-background="#rrggbb">.
 *
 * Camera: orthographic, the same framing and angles as facetex.face3d.pipeline.render_turntable:
 * the mesh's bounding-box centre in the middle, its larger x/y extent filling 0.85 of the canvas,
 * rotation R = Ry(yaw) Rx(pitch) (degrees; positive yaw turns the nose to the right, positive pitch
 * turns it down). Drag to orbit (0.5 degree per pixel), wheel to zoom, "reset view" to go back to
 * the starting view. URL parameters set the starting view: ?yaw=30&pitch=-10&zoom=1.5&mode=shaded.
 * State is mirrored on the canvas (data-yaw, data-pitch, data-zoom, data-mode) and
 * document.body.dataset.viewer becomes "ready" once the textured mesh is drawn, or "error" with
 * the reason shown on the page and sent to console.error.
 */
(function () {
  'use strict';

  var DEGREES_PER_PIXEL = 0.5;
  var ZOOM_RANGE = [0.25, 8.0];
  var FILL = 0.85;

  var canvas = document.getElementById('viewer');
  var status = document.getElementById('viewer-status');

  function fail(message) {
    document.body.dataset.viewer = 'error';
    if (status) { status.textContent = 'viewer error: ' + message; }
    throw new Error('face viewer: ' + message);
  }

  function decode(base64, Type) {
    var bytes = atob(base64);
    var buffer = new Uint8Array(bytes.length);
    for (var i = 0; i < bytes.length; i++) { buffer[i] = bytes.charCodeAt(i); }
    return new Type(buffer.buffer);
  }

  function startView() {
    var params = new URLSearchParams(window.location.search);
    var view = { yaw: 0, pitch: 0, zoom: 1, mode: 'texture' };
    ['yaw', 'pitch', 'zoom'].forEach(function (name) {
      if (!params.has(name)) { return; }
      var value = Number(params.get(name));
      if (!isFinite(value) || (name === 'zoom' && value <= 0)) {
        fail('URL parameter ' + name + '=' + params.get(name) + ' is not a ' +
             (name === 'zoom' ? 'positive number' : 'number of degrees'));
      }
      view[name] = value;
    });
    if (params.has('mode')) {
      view.mode = params.get('mode');
      if (view.mode !== 'texture' && view.mode !== 'shaded') {
        fail('URL parameter mode=' + view.mode + ' must be "texture" or "shaded"');
      }
    }
    view.pitch = Math.max(-89, Math.min(89, view.pitch));
    view.zoom = Math.max(ZOOM_RANGE[0], Math.min(ZOOM_RANGE[1], view.zoom));
    return view;
  }

  /* Area-weighted vertex normals (V x 3), for the shaded mode. */
  function vertexNormals(positions, indices) {
    var normals = new Float32Array(positions.length);
    for (var t = 0; t < indices.length; t += 3) {
      var a = 3 * indices[t], b = 3 * indices[t + 1], c = 3 * indices[t + 2];
      var ux = positions[b] - positions[a], uy = positions[b + 1] - positions[a + 1], uz = positions[b + 2] - positions[a + 2];
      var vx = positions[c] - positions[a], vy = positions[c + 1] - positions[a + 1], vz = positions[c + 2] - positions[a + 2];
      var nx = uy * vz - uz * vy, ny = uz * vx - ux * vz, nz = ux * vy - uy * vx;
      [a, b, c].forEach(function (v) { normals[v] += nx; normals[v + 1] += ny; normals[v + 2] += nz; });
    }
    for (var i = 0; i < normals.length; i += 3) {
      var length = Math.hypot(normals[i], normals[i + 1], normals[i + 2]) || 1;
      normals[i] /= length; normals[i + 1] /= length; normals[i + 2] /= length;
    }
    return normals;
  }

  /* Positions moved so the bounding-box centre is the origin; returns the x/y extent and the radius. */
  function centre(positions) {
    var low = [Infinity, Infinity, Infinity], high = [-Infinity, -Infinity, -Infinity];
    for (var i = 0; i < positions.length; i += 3) {
      for (var k = 0; k < 3; k++) {
        low[k] = Math.min(low[k], positions[i + k]); high[k] = Math.max(high[k], positions[i + k]);
      }
    }
    var radius = 0;
    for (var j = 0; j < positions.length; j += 3) {
      for (var d = 0; d < 3; d++) { positions[j + d] -= (low[d] + high[d]) / 2; }
      radius = Math.max(radius, Math.hypot(positions[j], positions[j + 1], positions[j + 2]));
    }
    return { extent: Math.max(high[0] - low[0], high[1] - low[1]), radius: radius };
  }

  /* Column-major 3 x 3 matrix of Ry(yaw) Rx(pitch), angles in degrees. */
  function rotation(yaw, pitch) {
    var y = yaw * Math.PI / 180, p = pitch * Math.PI / 180;
    var cy = Math.cos(y), sy = Math.sin(y), cp = Math.cos(p), sp = Math.sin(p);
    return new Float32Array([cy, 0, -sy, sy * sp, cp, cy * sp, sy * cp, -sp, cy * cp]);
  }

  var VERTEX_SHADER = [
    'attribute vec3 position; attribute vec3 normal; attribute vec2 uv;',
    'uniform mat3 rotation; uniform vec2 scale; uniform float depthScale;',
    'varying vec2 vUv; varying float vFacing;',
    'void main() {',
    '  vec3 p = rotation * position;',
    '  vUv = uv; vFacing = (rotation * normal).z;',
    '  gl_Position = vec4(p.x * scale.x, p.y * scale.y, -p.z * depthScale, 1.0);',
    '}'
  ].join('\n');

  var FRAGMENT_SHADER = [
    'precision mediump float;',
    'uniform sampler2D colourMap; uniform bool shaded;',
    'varying vec2 vUv; varying float vFacing;',
    'void main() {',
    '  if (shaded) {',
    '    float light = 0.25 + 0.65 * max(vFacing, 0.0);',  /* light from the viewer */
    '    gl_FragColor = vec4(vec3(light), 1.0);',
    '  } else {',
    '    gl_FragColor = vec4(texture2D(colourMap, vUv).rgb, 1.0);',
    '  }',
    '}'
  ].join('\n');

  function compile(gl, type, source) {
    var shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) { fail('shader: ' + gl.getShaderInfoLog(shader)); }
    return shader;
  }

  function program(gl) {
    var linked = gl.createProgram();
    gl.attachShader(linked, compile(gl, gl.VERTEX_SHADER, VERTEX_SHADER));
    gl.attachShader(linked, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT_SHADER));
    gl.linkProgram(linked);
    if (!gl.getProgramParameter(linked, gl.LINK_STATUS)) { fail('program: ' + gl.getProgramInfoLog(linked)); }
    return linked;
  }

  function buffer(gl, target, data) {
    var handle = gl.createBuffer();
    gl.bindBuffer(target, handle);
    gl.bufferData(target, data, gl.STATIC_DRAW);
    return handle;
  }

  function attribute(gl, shaderProgram, name, handle, size) {
    var location = gl.getAttribLocation(shaderProgram, name);
    gl.bindBuffer(gl.ARRAY_BUFFER, handle);
    gl.enableVertexAttribArray(location);
    gl.vertexAttribPointer(location, size, gl.FLOAT, false, 0, 0);
  }

  function hexColour(hex) {
    var match = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex || '');
    if (!match) { fail('canvas data-background must be a #rrggbb colour, got ' + hex); }
    return [1, 2, 3].map(function (k) { return parseInt(match[k], 16) / 255; });
  }

  function main() {
    if (!canvas) { fail('the page has no <canvas id="viewer">'); }
    var mesh = window.FACE_MESH;
    if (!mesh) { fail('mesh.js did not load (window.FACE_MESH is missing); rebuild the gallery'); }
    var gl = canvas.getContext('webgl', { antialias: true });
    if (!gl) { fail('this browser has no WebGL'); }
    var positions = decode(mesh.positions, Float32Array);
    var uvs = decode(mesh.uvs, Float32Array);
    var wide = decode(mesh.indices, Uint32Array);
    if (positions.length !== 3 * mesh.vertexCount || uvs.length !== 2 * mesh.vertexCount ||
        wide.length !== 3 * mesh.triangleCount) {
      fail('mesh.js holds arrays of the wrong length; rebuild the gallery');
    }
    var indexType = gl.UNSIGNED_SHORT, indices = new Uint16Array(wide);
    if (mesh.vertexCount > 65536) {
      if (!gl.getExtension('OES_element_index_uint')) { fail('mesh has over 65536 vertices and WebGL lacks 32-bit indices'); }
      indexType = gl.UNSIGNED_INT; indices = wide;
    }
    var normals = vertexNormals(positions, wide);
    var frame = centre(positions);
    var shaderProgram = program(gl);
    gl.useProgram(shaderProgram);
    attribute(gl, shaderProgram, 'position', buffer(gl, gl.ARRAY_BUFFER, positions), 3);
    attribute(gl, shaderProgram, 'normal', buffer(gl, gl.ARRAY_BUFFER, normals), 3);
    attribute(gl, shaderProgram, 'uv', buffer(gl, gl.ARRAY_BUFFER, uvs), 2);
    buffer(gl, gl.ELEMENT_ARRAY_BUFFER, indices);
    var uniforms = {};
    ['rotation', 'scale', 'depthScale', 'colourMap', 'shaded'].forEach(function (name) {
      uniforms[name] = gl.getUniformLocation(shaderProgram, name);
    });
    var background = hexColour(canvas.dataset.background);
    gl.enable(gl.DEPTH_TEST);

    var initial = startView();
    var view = Object.assign({}, initial);
    var textureReady = false;
    var pending = false;

    function draw() {
      pending = false;
      var width = Math.round(canvas.clientWidth * window.devicePixelRatio);
      var height = Math.round(canvas.clientHeight * window.devicePixelRatio);
      if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
      gl.viewport(0, 0, canvas.width, canvas.height);
      gl.clearColor(background[0], background[1], background[2], 1);
      gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
      var side = Math.min(canvas.width, canvas.height);
      var scale = 2 * FILL * view.zoom / frame.extent;
      gl.uniformMatrix3fv(uniforms.rotation, false, rotation(view.yaw, view.pitch));
      gl.uniform2f(uniforms.scale, scale * side / canvas.width, scale * side / canvas.height);
      gl.uniform1f(uniforms.depthScale, 1 / frame.radius);
      gl.uniform1i(uniforms.shaded, view.mode === 'shaded' ? 1 : 0);
      if (textureReady || view.mode === 'shaded') {
        gl.drawElements(gl.TRIANGLES, indices.length, indexType, 0);
      }
      canvas.dataset.yaw = view.yaw.toFixed(1);
      canvas.dataset.pitch = view.pitch.toFixed(1);
      canvas.dataset.zoom = view.zoom.toFixed(3);
      canvas.dataset.mode = view.mode;
      var pose = document.getElementById('viewer-pose');
      if (pose) { pose.textContent = 'yaw ' + view.yaw.toFixed(0) + '\u00b0, pitch ' + view.pitch.toFixed(0) + '\u00b0'; }
      if (textureReady) { document.body.dataset.viewer = 'ready'; }
    }

    function redraw() {
      if (!pending) { pending = true; window.requestAnimationFrame(draw); }
    }

    var image = new Image();
    image.onload = function () {
      gl.activeTexture(gl.TEXTURE0);
      gl.bindTexture(gl.TEXTURE_2D, gl.createTexture());
      gl.pixelStorei(gl.UNPACK_FLIP_Y_WEBGL, true);  /* image row 0 is v = 1 */
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGB, gl.RGB, gl.UNSIGNED_BYTE, image);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
      gl.uniform1i(uniforms.colourMap, 0);
      textureReady = true;
      redraw();
    };
    image.onerror = function () { fail('the texture in mesh.js could not be decoded; rebuild the gallery'); };
    image.src = mesh.texture;

    var drag = null;
    canvas.addEventListener('pointerdown', function (event) {
      drag = { x: event.clientX, y: event.clientY };
      canvas.setPointerCapture(event.pointerId);
    });
    canvas.addEventListener('pointermove', function (event) {
      if (!drag) { return; }
      view.yaw += (event.clientX - drag.x) * DEGREES_PER_PIXEL;
      view.pitch = Math.max(-89, Math.min(89, view.pitch + (event.clientY - drag.y) * DEGREES_PER_PIXEL));
      drag = { x: event.clientX, y: event.clientY };
      redraw();
    });
    ['pointerup', 'pointercancel'].forEach(function (name) {
      canvas.addEventListener(name, function () { drag = null; });
    });
    canvas.addEventListener('wheel', function (event) {
      event.preventDefault();
      view.zoom = Math.max(ZOOM_RANGE[0], Math.min(ZOOM_RANGE[1], view.zoom * Math.exp(-event.deltaY * 0.001)));
      redraw();
    }, { passive: false });
    var reset = document.getElementById('viewer-reset');
    if (reset) {
      reset.addEventListener('click', function () {
        view = Object.assign({}, initial, { mode: view.mode });
        redraw();
      });
    }
    document.querySelectorAll('input[name="viewer-mode"]').forEach(function (input) {
      input.checked = input.value === view.mode;
      input.addEventListener('change', function () { view.mode = input.value; redraw(); });
    });
    window.addEventListener('resize', redraw);
    redraw();
  }

  main();
})();
