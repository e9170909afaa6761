// Transient messages in the corner: at most four at a time, each fading out after `ms`.

export function showToast(container, msg, kind = 'error', ms = 4500) {
  const t = document.createElement('div');
  t.className = `toast ${kind}`;
  t.textContent = msg;
  container.appendChild(t);
  while (container.children.length > 4) container.firstElementChild.remove();
  setTimeout(() => {
    t.classList.add('leaving');
    setTimeout(() => t.remove(), 300);
  }, ms);
}
