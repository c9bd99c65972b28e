/* Face gallery page behaviour: the UV-texture overlay picker. A map is loaded only when picked. */
(function () {
  'use strict';
  document.querySelectorAll('select[data-overlay]').forEach(function (select) {
    var overlay = document.getElementById(select.dataset.overlay);
    select.addEventListener('change', function () {
      if (select.value) {
        overlay.src = select.value;
        overlay.hidden = false;
      } else {
        overlay.hidden = true;
        overlay.removeAttribute('src');
      }
    });
  });
})();
